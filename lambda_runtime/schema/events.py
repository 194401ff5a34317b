"""The EventBridge events iac-ci publishes: source, detail types and the detail of each.

One definition shared by the runtime (``notify``), the construct's rule helpers
(``IacCiPipeline.on_run_finished`` ...) and the tests.

Every event has ``source`` ``iac-ci`` and one of the detail types below; its ``detail`` is
one of the models here, serialized with ``model_dump(mode="json")`` (statuses as their string
values). A rule matches on them, e.g. every failed run of a deployment::

    {"source": ["iac-ci"], "detail-type": ["iac-ci Run State Change"],
     "detail": {"deployment": ["prod"], "final": [true], "status": ["failed", "timed_out"]}}

What an event never carries: log tails, commands, environment values or secrets. A log tail
may hold a secret even after masking (a value the command transformed), so consumers that want
logs follow the run (``GET /runs/{id}``) with their own credentials.

Delivery is at least once and unordered (EventBridge's guarantees, plus a publisher that
retries): ``event_id`` names the state change, so a consumer drops one it has seen, and
``time`` orders the changes of one run. A change is published after it is written, never
before; a change whose publish failed is logged, not retried later (the run's events table
and done object stay the record).

``detail_schemas()`` gives each detail type's JSON Schema, with these docstrings as field
descriptions.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lambda_runtime.schema.status import OrderStatus, RunStatus

SOURCE = "iac-ci"
RUN_STATE_CHANGE = "iac-ci Run State Change"
ORDER_STATE_CHANGE = "iac-ci Order State Change"
DRIFT_DETECTED = "iac-ci Drift Detected"
DETAIL_TYPES = (RUN_STATE_CHANGE, ORDER_STATE_CHANGE, DRIFT_DETECTED)

SCHEMA_VERSION = 1
RUN_SUBJECT = "#run"  # the subject of a run's own events in ``event_id`` (no order is named ``#run``)
REASON_MAX_CHARS = 2000  # a reason is a summary for a notification; the run keeps the whole of it


def event_id(run_id: str, subject: str, status: str, attempt: int = 0) -> str:
    """``<run_id>:<order or #run>:<status>:<attempt>``: the same for every delivery of one change."""
    return f"{run_id}:{subject}:{status}:{attempt}"


def clip(text: str | None, limit: int = REASON_MAX_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters (marked as cut), None kept."""
    if text is None or len(text) <= limit:
        return text
    marker = "... [truncated]"
    return text[: max(0, limit - len(marker))] + marker


class EventDetail(BaseModel):
    """The fields every iac-ci event's detail carries: which deployment, which run and what started it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(default=SCHEMA_VERSION, description=(
        'Version of this detail schema; raised only for a change a consumer could break on (a field '
        'removed or its meaning changed). New optional fields do not raise it.'))
    event_id: str = Field(description=(
        'Identifies the state change, for consumers to drop duplicates: ``<run_id>:<order or '
        '#run>:<status>:<attempt>`` (the attempt of an order; 0 for a run).'))
    deployment: str = Field(description=(
        "The engine deployment that published it (the construct's ``deployment_name``), to tell several "
        'deployments apart on one bus.'))
    run_id: str = Field(description="The run's id, as ``iac-ci status`` and ``GET /runs/{id}`` take it.")
    job: str = Field(description="The job's name (the run's ``name``).")
    repo: str | None = Field(default=None, description=(
        "The repository the run's source came from (``owner/name``), if it came from one."))
    commit: str | None = Field(default=None, description='The commit the run ran, if known.')
    pr_number: int | None = Field(default=None, description='The pull request the run belongs to, if any.')
    trigger: str = Field(default="submit", description=(
        'What started the run (``policy.model.TriggerEvent``): ``submit`` (the API or CLI), '
        '``pull_request``, ``push``, ``comment``, ``schedule``, ``merge``, ``merge_group`` ...'))
    time: float = Field(description='When the change happened: seconds since the epoch (UTC), fractional.')


class OrderStateChange(EventDetail):
    """Detail of ``iac-ci Order State Change``: one order moved from ``previous`` to ``status``.

    Published once per move actually written: queued -> running -> succeeded is two events; an
    order skipped because a dependency failed is one (queued -> skipped). The initial ``queued``
    is not an event: every order of a run is queued when the run starts running."""

    order: str = Field(description="The order's name within the job.")
    status: OrderStatus = Field(description='Its status now.')
    previous: OrderStatus = Field(description='Its status before this change.')
    attempt: int = Field(default=0, description=(
        'How many times it has been dispatched (0: never started; 1 once running).'))
    exit_code: int | None = Field(default=None, description=(
        'The exit code of its commands, once a worker reported one (an order that ended otherwise has '
        'none).'))
    reason: str | None = Field(default=None, description=(
        'Why it ended this way, when the engine knows (a dependency that did not succeed, a '
        "cancellation, a timeout, a worker's error), cut to 2,000 characters. Never a log tail."))
    trace: str | None = Field(default=None, description=(
        "The order's own leg trace, ``<run id>:<epoch>`` (the epoch: when it was packaged): what its "
        "commands see as ``IAC_CI_TRACE_ID`` and the ``leg_trace`` of its X-Ray segment, to follow the "
        "change to the order's own logs. None for an order packaged before orders had one."))


class RunStateChange(EventDetail):
    """Detail of ``iac-ci Run State Change``: the run started running, or ended (``final``).

    An ending run publishes exactly one event with ``final`` true, after its done object exists;
    its ``status`` is the run's verdict."""

    status: RunStatus = Field(description="The run's status now (``running``, or its final status).")
    final: bool = Field(description='True once the run ended: nothing of it changes any more.')
    orders: dict[str, int] = Field(description=(
        'How many of its orders are in each status, e.g. ``{"succeeded": 3, "skipped": 1}``.'))
    upstream_run_id: str | None = Field(default=None, description=(
        'The run whose end started this one (``on: after``), if any.'))
    duration_s: float | None = Field(default=None, description=(
        "Seconds from the run's acceptance to its end; None until it ended."))


class DriftDetected(EventDetail):
    """Detail of ``iac-ci Drift Detected``: a ``drift: true`` order's plan exited 2 (changes
    present) in a run that just ended; one event per drifted order, just before the run's final event."""

    order: str = Field(description="The drift order's name within the job.")
    exit_code: int | None = Field(default=None, description="Its commands' exit code (2).")


DETAIL_MODELS: dict[str, type[EventDetail]] = {
    RUN_STATE_CHANGE: RunStateChange,
    ORDER_STATE_CHANGE: OrderStateChange,
    DRIFT_DETECTED: DriftDetected,
}
"""The typed detail of each detail type the engine publishes."""


def detail_schemas() -> dict[str, dict[str, Any]]:
    """Each detail type's JSON Schema, field descriptions included (for docs and schema registries)."""
    return {kind: model.model_json_schema() for kind, model in DETAIL_MODELS.items()}
