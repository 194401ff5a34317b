"""Decide, without I/O, what one orchestrator step does to a run.

``plan(snapshot, results, signals, now, rules) -> Decision``: the transitions to write and the
side effects each one licenses. The engine (``orchestrator.engine``) applies a decision: it
writes the transitions in fenced transactions and runs an effect only for a transition that
was actually written, so at-most-once dispatch is a property of the applier, and every rule
(what is skipped, stopped, started, when a run is final and with which status) lives here,
tested as a table without AWS.

One step, in order:
1. results that arrived for running orders become their final status;
2. a cancelled or timed-out run stops everything still queued or running;
   otherwise the skip cascade and the ready set are computed over the statuses after (1);
3. running orders without a watchdog get one (a holder died between the two writes);
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
from lambda_runtime.schema.status import WORKER_RESULT_STATUSES, OrderStatus, RunStatus
from lambda_runtime.store.runs import Transition

REPORTING_MARGIN_SECONDS = 5.0


class Effect(enum.Enum):
    """What a written transition licenses the engine to do."""

    DISPATCH = "dispatch"  # start the worker, then its watchdog
    STOP_WORKER = "stop_worker"  # best effort: a stopped build, an ignored late Lambda result


@dataclass(frozen=True)
class Rules:
    """The deployment's settings a decision depends on."""

    watchdog_grace_seconds: int
    vcs_update_interval_seconds: float = 10.0
    vcs_enabled: bool = False


@dataclass(frozen=True)
class Arrived:
    """A result object found for a running order, with the time S3 recorded it."""

    result: OrderResult
    reported_at: float


@dataclass(frozen=True)
class Step:
    transition: Transition
    effect: Effect | None = None


@dataclass
class Decision:
    """What to write and do, in the order the engine must do it."""

    settle: list[Step] = field(default_factory=list)  # results, stops and skips: one batch
    start: list[Step] = field(default_factory=list)  # queued -> running, then dispatch (chunked)
    repair_watchdogs: list[str] = field(default_factory=list)
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
) -> Decision:
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
        decision.settle += _stop_all(snap, status, cancelled=cancelled, now=now)
    elif run.status is RunStatus.RUNNING:
        decision.repair_watchdogs = [
            n for n, o in snap.orders.items() if o.status is OrderStatus.RUNNING and not o.watchdog
        ]
        skips, ready = _advance(snap, status)
        decision.settle += skips
        decision.start = [_start(snap.orders[n], run.run_id, now) for n in ready]
    for step in (*decision.settle, *decision.start):
        status[step.transition.name] = step.transition.to
    if all(s.terminal for s in status.values()):
        final = {n: (snap.orders[n].must_succeed, s) for n, s in status.items()}
        decision.finalize = final_status(run, final, cancelled=cancelled, job_timed_out=timed_out)
    elif decision.transitions and rules.vcs_enabled and run.vcs:
        decision.publish_progress = now - (run.vcs_updated_at or 0) >= rules.vcs_update_interval_seconds
    return decision


def job_timed_out(run: RunRecord, signals: frozenset[str], now: float) -> bool:
    deadline = run.deadline if run.deadline is not None else now + 1
    return layout.SIGNAL_JOB_TIMEOUT in signals or now >= deadline


def final_status(
    run: RunRecord,
    orders: Mapping[str, tuple[bool, OrderStatus]],
    *,
    cancelled: bool,
    job_timed_out: bool,
) -> RunStatus:
    """The run's verdict once every order (``name -> (must_succeed, status)``) is final."""
    nodes = {n: dag.NodeState(st, must, ()) for n, (must, st) in orders.items()}
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
    move = Transition(order.name, (OrderStatus.RUNNING,), result.status, fields, detail)
    # the watchdog spoke for a worker that may merely be late: it must not go on
    return Step(move, Effect.STOP_WORKER if result.producer == "watchdog" else None)


def _stop_all(
    snap: RunSnapshot, status: Mapping[str, OrderStatus], *, cancelled: bool, now: float
) -> list[Step]:
    """Cancellation or job timeout: nothing new starts, running workers are stopped."""
    reason = "run cancelled" if cancelled else "job timeout reached"
    steps = []
    for name in snap.orders:
        st = status[name]
        if st is OrderStatus.QUEUED:
            to, effect = OrderStatus.CANCELLED, None
        elif st is OrderStatus.RUNNING:
            to, effect = (OrderStatus.CANCELLED if cancelled else OrderStatus.TIMED_OUT), Effect.STOP_WORKER
        else:
            continue
        steps.append(Step(Transition(name, (st,), to, {"reason": reason, "finished_at": now}, {"reason": reason}),
                          effect))
    return steps


def _advance(snap: RunSnapshot, status: Mapping[str, OrderStatus]) -> tuple[list[Step], list[str]]:
    nodes = {
        n: dag.NodeState(status[n], o.must_succeed, o.depends_on) for n, o in snap.orders.items()
    }
    cascade = dag.plan(nodes)
    skips = [
        Step(Transition(n, (OrderStatus.QUEUED,), OrderStatus.SKIPPED, {"reason": f"dependency '{b}' did not succeed"},
                        {"blocked_by": b}))
        for n, b in cascade.skip.items()
    ]
    return skips, cascade.ready


def _start(order: OrderRecord, run_id: str, now: float) -> Step:
    attempt = order.attempt + 1
    move = Transition(
        order.name,
        (OrderStatus.QUEUED,),
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
