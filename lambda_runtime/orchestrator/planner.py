"""Decide, without I/O, what one orchestrator step does to a run.

``plan(snapshot, results, signals, now, rules) -> Decision``: the transitions to write and the
side effects each one licenses. The engine (``orchestrator.engine``) applies a decision: it
writes the transitions in fenced transactions and runs an effect only for a transition that
was actually written, so at-most-once dispatch is a property of the applier, and every rule
(what is skipped, stopped, started, when a run is final and with which status) lives here,
tested as a table without AWS.

One step, in order:
1. results that arrived for running orders become their final status;
2. a cancelled or timed-out run stops everything still queued, awaiting or running;
   otherwise the skip cascade and the ready set are computed over the statuses after (1):
   a ready order whose environment has rules moves to ``awaiting_approval``, one whose rules
   have passed (approvals, wait timer) or that has none starts, one rejected becomes
   ``rejected``; starts stop at the per-run concurrency cap;
3. running orders without a watchdog get one (a holder died between the two writes), and
   awaiting orders with a wait timer but no timer get one;
4. when every order is final the run is finalized; else a PR progress update may be due.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from lambda_runtime.job import dag
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import LOG_TAIL_CHARS, OrderResult
from lambda_runtime.schema.records import OrderRecord, RunRecord, RunSnapshot
from lambda_runtime.schema.status import NEVER_RAN, SUCCESSES, WORKER_RESULT_STATUSES, OrderStatus, RunStatus
from lambda_runtime.store.runs import Transition

REPORTING_MARGIN_SECONDS = 5.0
TIMER_SKEW_SECONDS = 2.0  # a wait timer wakes the run this long after it ends (clock skew)


class Effect(enum.Enum):
    """What a written transition licenses the engine to do."""

    DISPATCH = "dispatch"  # mint its credentials, start the worker, then its watchdog
    STOP_WORKER = "stop_worker"  # best effort: a stopped build, an ignored late Lambda result
    START_TIMER = "start_timer"  # a wake-up when its environment's wait timer ends


@dataclass(frozen=True)
class Rules:
    """The deployment's settings a decision depends on."""

    watchdog_grace_seconds: int
    vcs_update_interval_seconds: float = 10.0
    vcs_enabled: bool = False
    max_running_per_run: int | None = None  # further ready orders stay queued until a slot frees
    max_running_per_deployment: int | None = None  # across every run (``store.slots``)


@dataclass(frozen=True)
class Arrived:
    """A result object found for a running order, with the time S3 recorded it."""

    result: OrderResult
    reported_at: float


@dataclass(frozen=True)
class Step:
    transition: Transition
    effect: Effect | None = None
    # a result's move: the start its worker reported (None: no start was reported, the watchdog or the
    # engine spoke), which the metrics tell apart from the dispatch time stored in its place
    worker_started: float | None = None


@dataclass
class Decision:
    """What to write and do, in the order the engine must do it."""

    settle: list[Step] = field(default_factory=list)  # results, stops and skips: one batch
    start: list[Step] = field(default_factory=list)  # queued -> running, then dispatch (chunked)
    repair_watchdogs: list[str] = field(default_factory=list)
    repair_timers: list[str] = field(default_factory=list)  # awaiting a wait timer that has none
    wait_for_slot: bool = False  # ready orders were held back by the deployment's cap
    finalize: RunStatus | None = None
    publish_progress: bool = False

    @property
    def transitions(self) -> list[Transition]:
        return [s.transition for s in (*self.settle, *self.start)]


def plan(
    snap: RunSnapshot,
    results: Mapping[str, Arrived],
    signals: frozenset[str],
    now: float,
    rules: Rules,
    deployment_running: int = 0,
) -> Decision:
    """``deployment_running``: orders running across the deployment when the snapshot was read
    (only read when ``rules.max_running_per_deployment`` is set)."""
    run = snap.run
    decision = Decision()
    if run is None or run.finalized:
        return decision
    timed_out = job_timed_out(run, signals, now)
    cancelled = run.cancel_requested
    if run.status in (RunStatus.ACCEPTED, RunStatus.PACKAGING):
        if cancelled or timed_out:  # no order exists yet, and none will run
            decision.finalize = RunStatus.CANCELLED if cancelled else RunStatus.TIMED_OUT
        return decision
    status = {n: o.status for n, o in snap.orders.items()}
    for name in sorted(results):
        order = snap.orders.get(name)
        if order is not None and order.status is OrderStatus.RUNNING:
            step = _ingest(order, results[name])
            decision.settle.append(step)
            status[name] = step.transition.to
    if cancelled or timed_out:
        decision.settle += _stop_all(snap, status, cancelled=cancelled, now=now,
                                     keep_applies=cancelled and not timed_out and not run.cancel_running)
    elif run.status is RunStatus.RUNNING:
        decision.repair_watchdogs = [
            n for n, o in snap.orders.items() if o.status is OrderStatus.RUNNING and not o.watchdog
        ]
        decision.repair_timers = [
            n for n, o in snap.orders.items()
            if o.status is OrderStatus.AWAITING_APPROVAL and o.wait_seconds and not o.timer and now < o.wait_until
        ]
        rejected = _rejections(snap)  # first: the skip cascade below must see them
        stopped = _fail_fast(snap, status, now)
        for step in (*rejected, *stopped):
            status[step.transition.name] = step.transition.to
        decision.settle += stopped
        skips, ready = _advance(snap, status, now)
        awaiting, released = _gate(snap, ready, now)
        decision.settle += rejected + skips + awaiting
        startable = released + [n for n in ready if not snap.orders[n].gated]
        freed = sum(1 for st in decision.settle if st.transition.from_status == (OrderStatus.RUNNING,))
        allowed, decision.wait_for_slot = _under_cap(startable, status, rules, deployment_running - freed)
        decision.start = [_start(snap.orders[n], run.run_id, now) for n in allowed]
    for step in (*decision.settle, *decision.start):
        status[step.transition.name] = step.transition.to
    if all(s.terminal for s in status.values()):
        decision.finalize = final_status(run, {n: _node(o, status[n]) for n, o in snap.orders.items()},
                                         cancelled=cancelled, job_timed_out=timed_out)
    elif (decision.transitions or _decided_since_update(snap)) and rules.vcs_enabled and run.vcs:
        decision.publish_progress = now - (run.vcs_updated_at or 0) >= rules.vcs_update_interval_seconds
    return decision


def _decided_since_update(snap: RunSnapshot) -> bool:
    """A reviewer approved a waiting order (through the API, say) after the PR was last updated: the
    comment shows who approved and how many are still needed, even though nothing moved yet."""
    assert snap.run is not None
    since = snap.run.vcs_updated_at or 0
    return any(float(a.get("at") or 0) > since for o in snap.orders.values()
               if o.status is OrderStatus.AWAITING_APPROVAL for a in o.approvals)


def job_timed_out(run: RunRecord, signals: frozenset[str], now: float) -> bool:
    deadline = run.deadline if run.deadline is not None else now + 1
    return layout.SIGNAL_JOB_TIMEOUT in signals or now >= deadline


def _node(order: OrderRecord, status: OrderStatus) -> dag.NodeState:
    return dag.NodeState(status, order.must_succeed, order.depends_on, order.run_if)


def final_status(
    run: RunRecord,
    nodes: Mapping[str, dag.NodeState],
    *,
    cancelled: bool,
    job_timed_out: bool,
) -> RunStatus:
    """The run's verdict once every order is final."""
    status = dag.job_status(nodes, cancelled=cancelled, job_timed_out=job_timed_out)
    if run.status is RunStatus.PACKAGING_FAILED and status is RunStatus.SUCCEEDED:
        return RunStatus.FAILED  # no orders ran, so none failed: the run did all the same
    return status


def _ingest(order: OrderRecord, arrived: Arrived) -> Step:
    result = arrived.result
    fields = {
        "exit_code": result.exit_code,
        "started_at": result.started_at or order.dispatched_at,
        "finished_at": result.finished_at or arrived.reported_at,
        "log_tail": result.log_tail[-LOG_TAIL_CHARS:],
        "reason": result.error,
        "reported_by": result.producer,
    }
    detail = {"exit_code": result.exit_code, "by": result.producer}
    to = result.status
    if to is OrderStatus.DRIFTED and not order.drift:  # only a drift order's exit 2 is a finding
        to, fields["reason"] = OrderStatus.FAILED, "a command exited with code 2"
    move = Transition(order.name, (OrderStatus.RUNNING,), to, fields, detail)
    # the watchdog spoke for a worker that may merely be late: it must not go on
    return Step(move, Effect.STOP_WORKER if result.producer == "watchdog" else None,
                worker_started=result.started_at if result.producer == "worker" else None)


def _stop_all(
    snap: RunSnapshot, status: Mapping[str, OrderStatus], *, cancelled: bool, now: float, keep_applies: bool = False
) -> list[Step]:
    """Cancellation or job timeout: nothing new starts, running workers are stopped
    (``keep_applies``: except a running apply, which finishes; the run ends once it has)."""
    reason = "run cancelled" if cancelled else "job timeout reached"
    steps = []
    for name in snap.orders:
        st = status[name]
        if keep_applies and st is OrderStatus.RUNNING and snap.orders[name].command == "apply":
            continue
        if st in (OrderStatus.QUEUED, OrderStatus.AWAITING_APPROVAL):
            to = OrderStatus.CANCELLED if (cancelled or st is OrderStatus.QUEUED) else OrderStatus.TIMED_OUT
            effect = None
        elif st is OrderStatus.RUNNING:
            to, effect = (OrderStatus.CANCELLED if cancelled else OrderStatus.TIMED_OUT), Effect.STOP_WORKER
        else:
            continue
        steps.append(Step(Transition(name, (st,), to, {"reason": reason, "finished_at": now}, {"reason": reason}),
                          effect))
    return steps


def _advance(snap: RunSnapshot, status: Mapping[str, OrderStatus], now: float) -> tuple[list[Step], list[str]]:
    """The skip cascade and the ready set. A skip ends its order ``now`` (``finished_at``): an order
    behind it (``run_if: always``) is ready from then, not from the end of packaging (``QueueWait``)."""
    cascade = dag.plan({n: _node(o, status[n]) for n, o in snap.orders.items()})
    skips = []
    for n, b in cascade.skip.items():
        why = cascade.unneeded.get(n)
        reason = f"not needed: {why}" if why else f"dependency '{b}' did not succeed"
        skips.append(Step(Transition(n, (OrderStatus.QUEUED,), OrderStatus.SKIPPED,
                                     {"reason": reason, "finished_at": now},
                                     {"blocked_by": b, **({"unneeded": True} if why else {})})))
    return skips, cascade.ready


def _fail_fast(snap: RunSnapshot, status: Mapping[str, OrderStatus], now: float) -> list[Step]:
    """A matrix with ``fail_fast``: once one instance failed, the queued siblings are skipped and
    the running ones stopped (their results would not change the run's verdict)."""
    failed: dict[str, str] = {}
    for name, order in snap.orders.items():
        st = status[name]
        if order.group and order.fail_fast and st.terminal and st not in SUCCESSES and st not in NEVER_RAN \
                and order.must_succeed:
            failed.setdefault(order.group, name)
    steps = []
    for name, order in snap.orders.items():
        cause = failed.get(order.group or "")
        if cause is None or cause == name:
            continue
        reason = f"matrix instance '{cause}' failed (fail_fast)"
        st = status[name]
        if st is OrderStatus.QUEUED:
            steps.append(Step(Transition(name, (st,), OrderStatus.SKIPPED, {"reason": reason, "finished_at": now},
                                         {"blocked_by": cause})))
        elif st is OrderStatus.RUNNING:
            steps.append(Step(Transition(name, (st,), OrderStatus.CANCELLED, {"reason": reason, "finished_at": now},
                                         {"reason": reason}), Effect.STOP_WORKER))
    return steps


def _rejections(snap: RunSnapshot) -> list[Step]:
    """Waiting orders a reviewer of their environment rejected."""
    out = []
    for name, order in snap.orders.items():
        if order.status is OrderStatus.AWAITING_APPROVAL and order.rejection:
            who = order.rejection.get("by")
            reason = f"rejected by {who}" + (f": {order.rejection['reason']}" if order.rejection.get("reason") else "")
            at = order.rejection.get("at")
            out.append(Step(Transition(name, (OrderStatus.AWAITING_APPROVAL,), OrderStatus.REJECTED,
                                       {"reason": reason[:1000], "finished_at": at}, {"by": who})))
    return out


def _gate(snap: RunSnapshot, ready: list[str], now: float) -> tuple[list[Step], list[str]]:
    """Environments with rules: a ready order starts waiting; a waiting one is released once it
    has its approvals (distinct reviewers, checked when recorded) and its timer ran out.
    Returns (moves to awaiting, names released to start)."""
    awaiting = []
    for name in ready:
        order = snap.orders[name]
        if not order.gated:
            continue
        detail = {"environment": order.environment, "needed": order.approvals_needed,
                  "wait_seconds": order.wait_seconds}
        effect = Effect.START_TIMER if order.wait_seconds else None
        awaiting.append(Step(Transition(name, (OrderStatus.QUEUED,), OrderStatus.AWAITING_APPROVAL,
                                        {"awaiting_since": now}, detail), effect))
    released = sorted(
        name for name, order in snap.orders.items()
        if order.status is OrderStatus.AWAITING_APPROVAL and not order.rejection and approved(order)
        and now >= order.wait_until
    )
    return awaiting, released


def approved(order: OrderRecord) -> bool:
    """Enough distinct reviewers (each checked against the environment when recorded), or the
    operator of a local run, who owns that deployment."""
    if any(a.get("owner") for a in order.approvals):
        return True
    return len({str(a.get("by", "")).lower() for a in order.approvals}) >= order.approvals_needed


def _under_cap(names: list[str], status: Mapping[str, OrderStatus], rules: Rules,
               deployment_running: int) -> tuple[list[str], bool]:
    """The orders that may start now, and whether the deployment's cap (not the run's) held some back."""
    room = len(names)
    if rules.max_running_per_run is not None:
        running = sum(1 for s in status.values() if s is OrderStatus.RUNNING)
        room = min(room, max(0, rules.max_running_per_run - running))
    held_by_deployment = False
    if rules.max_running_per_deployment is not None:
        free = max(0, rules.max_running_per_deployment - deployment_running)
        held_by_deployment = free < room
        room = min(room, free)
    return names[:room], held_by_deployment


def _start(order: OrderRecord, run_id: str, now: float) -> Step:
    attempt = order.attempt + 1
    move = Transition(
        order.name,
        (order.status,) if order.status is OrderStatus.AWAITING_APPROVAL else (OrderStatus.QUEUED,),
        OrderStatus.RUNNING,
        {"attempt": attempt, "dispatched_at": now, "log_key": layout.log_key(run_id, order.name)},
        {"target": order.target, "attempt": attempt},
    )
    return Step(move, Effect.DISPATCH)


# ---- timing rules shared by dispatch and the watchdog ---------------------------------------------
def watchdog_deadline(order: OrderRecord, grace_seconds: int) -> float:
    """When the watchdog speaks for a silent worker; fixed by the dispatch time, so a repair
    after a crash computes the same deadline (and the same execution input)."""
    return float(order.dispatched_at or 0) + order.timeout + grace_seconds


def reporting_margin(grace_seconds: int) -> float:
    """Time the worker keeps, before the watchdog speaks, to upload its log and result."""
    return min(REPORTING_MARGIN_SECONDS, grace_seconds / 2)


def url_lifetime(timeout: int, grace_seconds: int, margin_seconds: int) -> int:
    """Presigned URLs must outlive the order's timeout, the watchdog grace and a start-up margin."""
    return timeout + grace_seconds + margin_seconds


def read_result(raw: bytes, *, run_id: str, order: OrderRecord) -> OrderResult:
    """A result object as the engine accepts it: one naming another run, order or a status a
    worker may not report becomes a failure of this order, never a crash of the orchestrator."""
    try:
        result = OrderResult.model_validate_json(raw)
        if result.run_id != run_id or result.order != order.name or result.status not in WORKER_RESULT_STATUSES:
            raise ValueError("result names another run, order or status")
    except (ValidationError, ValueError) as exc:
        result = OrderResult(
            run_id=run_id,
            order=order.name,
            attempt=order.attempt or 1,
            status=OrderStatus.FAILED,
            error=f"unreadable result: {str(exc)[:300]}",
            producer="engine",
        )
    return result
