"""Typed records of what the ``orders`` table stores, the run summary, and the lease fence.

The item layout (``schema.tables``) says where records live; this module says what they hold.
Stores convert at their boundary (``from_item`` / ``to_item``), so the packager, the planner and
the providers never handle a raw DynamoDB item. Records are plain slotted dataclasses: a
5,000-order run is read on every orchestrator step, and construction cost matters there.

Unknown attributes are ignored on read, so an item written by a newer version stays readable.
Absent attributes take the defaults below (a projected read fetches only what can change).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypedDict

from lambda_runtime.schema.status import OrderStatus, RunStatus

RUN_SK = "#run"
ORDER_SK_PREFIX = "order#"

Target = Literal["lambda", "codebuild"]


def order_sk(name: str) -> str:
    return ORDER_SK_PREFIX + name


@dataclass(frozen=True, slots=True)
class OrderInput:
    """An artifact of another order, unpacked at ``path`` before this order's commands run."""

    from_order: str
    path: str
    run_id: str | None = None  # another run's order (an apply run's plan); None: this run

    def to_item(self) -> dict[str, str]:
        item = {"from": self.from_order, "path": self.path}
        return {**item, "run": self.run_id} if self.run_id else item


@dataclass(slots=True)
class OrderRecord:
    """One order of a run (``sk = order#<name>``). Fields down to ``masked_tokens`` are fixed at
    packaging (``STATIC_ORDER_FIELDS``); the rest change as the order moves."""

    name: str
    status: OrderStatus = OrderStatus.QUEUED
    target: Target = "lambda"
    timeout: int = 0
    depends_on: tuple[str, ...] = ()
    must_succeed: bool = True
    has_artifacts: bool = False
    inputs: tuple[OrderInput, ...] = ()
    masked_tokens: int = 0
    # what it receives at dispatch, by name only (values are read and minted then, never before)
    secret_refs: tuple[dict[str, str], ...] = ()
    aws_role: str | None = None
    # its environment's rules, copied from the deployment policy at packaging
    environment: str | None = None
    approvals_needed: int = 0
    wait_seconds: int = 0
    # pull requests: its command, the lock it takes before it starts, what must hold before an apply
    command: str = "plan"
    lock: str | None = None
    apply_requirements: tuple[str, ...] = ()
    required_reviews: int = 1
    # pipelines: when it runs (``success``: its dependencies succeeded; ``always``, ``failure``,
    # ``drifted``: see ``job.dag``), whether exit code 2 means drift, the matrix it is an instance
    # of (its siblings share ``group``) and whether one failed instance stops the others, and
    # the CodeBuild image it runs on (None: the engine's) and privileged mode
    run_if: str = "success"
    drift: bool = False
    group: str | None = None
    fail_fast: bool = False
    image: str | None = None
    privileged: bool = False
    # the trace of its leg (``observability.trace``), minted at packaging: its manifest's, its worker's
    trace: str = ""
    attempt: int = 0
    dispatched_at: float | None = None
    watchdog: str | None = None
    dispatch_ref: str | None = None
    log_key: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_tail: str = ""
    reason: str | None = None
    reported_by: str | None = None
    awaiting_since: float | None = None
    timer: str | None = None  # the wait timer's execution, once started
    approvals: tuple[dict[str, Any], ...] = ()  # {"by", "at", "via", "rule"}: distinct reviewers
    rejection: dict[str, Any] | None = None  # {"by", "at", "via", "reason"}
    updated_at: float | None = None

    @property
    def gated(self) -> bool:
        return self.approvals_needed > 0 or self.wait_seconds > 0

    @property
    def wait_until(self) -> float:
        return float(self.awaiting_since or 0) + self.wait_seconds

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> OrderRecord:
        values = {k: item[k] for k in _ORDER_NAMES if k in item}
        values.setdefault("name", str(item.get("sk", ""))[len(ORDER_SK_PREFIX) :])
        values["status"] = OrderStatus(values.get("status", OrderStatus.QUEUED))
        values["depends_on"] = tuple(values.get("depends_on", ()))
        values["inputs"] = tuple(OrderInput(i["from"], i["path"], i.get("run")) for i in values.get("inputs", ()))
        values["secret_refs"] = tuple(values.get("secret_refs", ()))
        values["approvals"] = tuple(values.get("approvals", ()))
        values["apply_requirements"] = tuple(values.get("apply_requirements", ()))
        return cls(**values)

    def to_item(self) -> dict[str, Any]:
        out = _plain(self)
        out["depends_on"] = list(self.depends_on)
        out["inputs"] = [i.to_item() for i in self.inputs]
        out["secret_refs"] = list(self.secret_refs)
        out["approvals"] = list(self.approvals)
        out["apply_requirements"] = list(self.apply_requirements)
        return out

    def update(self, changes: dict[str, Any]) -> None:
        """Apply fields just written to the table (a transition's), keeping the record typed."""
        for key, val in changes.items():
            if val is None or key not in _ORDER_NAMES:
                continue
            setattr(self, key, OrderStatus(val) if key == "status" else val)


@dataclass(slots=True)
class RunRecord:
    """The run item (``sk = #run``): identity, status, deadline, flags and where it reports."""

    run_id: str
    status: RunStatus = RunStatus.ACCEPTED
    trace_id: str = ""
    flow_id: str = ""
    name: str = ""
    username: str = ""
    repo: str | None = None
    pr_number: int | None = None
    commit: str | None = None
    vcs: str | None = None
    installation_id: int | None = None
    timeout: int = 0
    deadline: float | None = None
    created_at: float | None = None
    # written on every run item and only there: the open-orders read filters on it to keep the run item
    order_total: int = 0
    order_count: int | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    cancel_requested_at: float | None = None
    finalized: bool = False
    finished_at: float | None = None
    expire_at: int | None = None  # the TTL, written when the run is final (``schema.retention``)
    packaging_started_at: float | None = None
    packaged_at: float | None = None
    packaging_error: str | None = None
    vcs_updated_at: float | None = None
    # what started it, for the policy's event and branch rules (set by the engine, never the job)
    trigger: str = "submit"
    branch: str | None = None
    untrusted: bool = False  # a fork's or an untrusted author's pull request
    mask_salt: str = ""  # hex; salts the digests every order masks the run's secrets with
    # pull requests: the command it runs (plan/apply), the plan run an apply run follows, who
    # holds its orders' locks (``store.pr_locks.Holder``), whether the run gives them back when it
    # ends (a merge's apply run, or a run outside a pull request), and how cancel treats it
    command: str | None = None
    plan_run_id: str | None = None
    lock_holder: str | None = None
    pr_url: str | None = None
    release_locks: bool = False
    lock_ttl_seconds: int = 7 * 86400
    # a superseded run (a new push): queued orders are cancelled, running applies finish
    cancel_running: bool = True
    # pipelines: the run that triggered this one (``on: after``) and its job; the parameters'
    # values it ran with
    upstream_run_id: str | None = None
    upstream_job: str | None = None
    downstream_run_ids: list[str] | None = None  # the runs its end started
    chain: list[str] | None = None  # the ``<repo>#<job>`` runs that led to this one (a loop is refused)
    params: dict[str, str] | None = None
    updated_at: float | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RunRecord:
        values = {k: item[k] for k in _RUN_NAMES if k in item}
        values["status"] = RunStatus(values.get("status", RunStatus.ACCEPTED))
        return cls(**values)

    def to_item(self) -> dict[str, Any]:
        # the flags exist only once set: conditions test ``attribute_not_exists(finalized)``
        return {k: v for k, v in _plain(self).items() if not (k in _RUN_FLAGS and v is False)}

    def update(self, changes: dict[str, Any]) -> None:
        for key, val in changes.items():
            if val is not None and key in _RUN_NAMES:
                setattr(self, key, RunStatus(val) if key == "status" else val)


@dataclass
class RunSnapshot:
    """A run as one strongly consistent Query saw it."""

    run: RunRecord | None
    orders: dict[str, OrderRecord] = field(default_factory=dict)

    @classmethod
    def from_items(cls, run: dict[str, Any] | None, orders: dict[str, dict[str, Any]]) -> RunSnapshot:
        return cls(RunRecord.from_item(run) if run is not None else None,
                   {n: OrderRecord.from_item(o) for n, o in orders.items()})


@dataclass(frozen=True, slots=True)
class LeaseFence:
    """Proof of holding a run's lease: checked inside every transaction that changes run state,
    so a holder that paused past its lease cannot write over its successor."""

    table: str
    run_id: str
    owner: str
    epoch: int

    def condition_check(self) -> dict[str, Any]:
        """The TransactWriteItems ConditionCheck that fails once this lease is no longer current."""
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": {"run_id": {"S": self.run_id}},
                "ConditionExpression": "#o = :o AND epoch = :e",
                "ExpressionAttributeNames": {"#o": "owner"},
                "ExpressionAttributeValues": {":o": {"S": self.owner}, ":e": {"N": str(self.epoch)}},
            }
        }


class ApprovalView(TypedDict):
    environment: str | None
    needed: int
    approved_by: list[str]
    wait_until: float | None
    rejected_by: str | None


class OrderView(TypedDict, total=False):
    status: str
    target: str
    must_succeed: bool
    exit_code: int | None
    duration_s: float | None
    log_tail: str
    log_key: str | None
    reason: str | None
    approval: ApprovalView  # only for an order whose environment has rules
    drift: bool  # only for a ``drift: true`` order
    run_if: str  # only when not ``success``


class RunSummary(TypedDict, total=False):
    """The one shape of a run for humans and clients: the done object, the ``job_completed``
    event, PR comments, ``GET /runs/{id}`` and ``iac-ci run --json``. ``finished_at`` is present
    once the run is final."""

    run_id: str
    status: str
    name: str
    trace_id: str
    flow_id: str
    repo: str | None
    pr_number: int | None
    commit: str | None
    vcs: str | None
    installation_id: int | None
    created_at: float | None
    error: str | None
    command: str | None  # plan or apply, for a pull request's run
    trigger: str
    pr_url: str | None
    plan_run_id: str | None  # an apply run: the plan whose artifacts it applies
    upstream_run_id: str | None  # ``on: after``: the run whose end started this one
    upstream_job: str | None
    params: dict[str, str]  # the parameters' values (only when the job defines some)
    order_layers: list[list[str]]
    orders: dict[str, OrderView]
    finished_at: float


def _plain(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(record):
        val = getattr(record, f.name)
        if val is None:
            continue
        out[f.name] = val.value if isinstance(val, (OrderStatus, RunStatus)) else val
    return out


_ORDER_NAMES = frozenset(f.name for f in fields(OrderRecord))
_RUN_NAMES = frozenset(f.name for f in fields(RunRecord))
_RUN_FLAGS = frozenset({"finalized", "cancel_requested"})
STATIC_ORDER_FIELDS = (
    "name", "target", "timeout", "depends_on", "must_succeed", "has_artifacts", "inputs", "masked_tokens",
    "secret_refs", "aws_role", "environment", "approvals_needed", "wait_seconds", "command", "lock",
    "apply_requirements", "required_reviews", "run_if", "drift", "group", "fail_fast", "image", "privileged",
    "trace",
)
