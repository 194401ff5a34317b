"""The run and order state machines: every allowed status change, declared once, with why.

Every writer goes through ``RunStore`` (``transition_many``, ``transition_run``, ``finalize``),
which refuses an edge that is not declared here before anything is written, and writes each
edge as a conditional update on the source status (plus the run's lease fence). So the table
below is both the documentation and the enforcement: a status that cannot be reached from here
cannot appear in the orders table.
"""

from __future__ import annotations

from lambda_runtime.schema.status import RUN_FINAL, OrderStatus, RunStatus

Q, R, A = OrderStatus.QUEUED, OrderStatus.RUNNING, OrderStatus.AWAITING_APPROVAL

ORDER_EDGES: dict[tuple[OrderStatus, OrderStatus], str] = {
    (Q, R): "dispatch: marked running before any side effect, so an order starts at most once",
    (R, OrderStatus.SUCCEEDED): "its result object (worker) says so",
    (R, OrderStatus.DRIFTED): "its result object (worker) says its drift plan exited 2: changes present",
    (R, OrderStatus.FAILED): "its result object (worker, or the engine after a refused dispatch) says so",
    (R, OrderStatus.TIMED_OUT): "its result object (worker or watchdog) says so, or the job timeout stopped it",
    (Q, OrderStatus.SKIPPED): "a required dependency, directly or transitively, did not succeed",
    (Q, OrderStatus.CANCELLED): "the run was cancelled, or the job timeout passed, before it started",
    (R, OrderStatus.CANCELLED): "the run was cancelled while it ran; its worker is stopped",
    (Q, A): "its dependencies succeeded and its environment has rules (reviewers, a wait timer) to pass",
    (A, R): "every rule of its environment passed: credentials are minted and it is dispatched",
    (A, OrderStatus.REJECTED): "a reviewer of its environment rejected it",
    (A, OrderStatus.CANCELLED): "the run was cancelled while it waited",
    (A, OrderStatus.TIMED_OUT): "the job timeout passed while it waited",
    (Q, OrderStatus.LOCKED): "about to start, its lock is held by another pull request or run",
    (A, OrderStatus.LOCKED): "approved, but its lock is held by another pull request or run",
    (Q, OrderStatus.BLOCKED): "about to start, an apply requirement is not met",
    (A, OrderStatus.BLOCKED): "approved, but an apply requirement is not met",
}

RUN_EDGES: dict[tuple[RunStatus, RunStatus], str] = {
    (RunStatus.ACCEPTED, RunStatus.PACKAGING): "packaging picked the job up",
    (RunStatus.PACKAGING, RunStatus.RUNNING): "every order is stored, queued (event job_started)",
    (RunStatus.PACKAGING, RunStatus.PACKAGING_FAILED): "a source, secret or bundle could not be built",
    # finalization: exactly once per run (the ``finalized`` flag), from any status not yet final
    **{
        (src, dst): "finalized: every order is final, or the run was cancelled or timed out"
        for src in (RunStatus.ACCEPTED, RunStatus.PACKAGING, RunStatus.PACKAGING_FAILED, RunStatus.RUNNING)
        for dst in RUN_FINAL
    },
}


class IllegalTransition(ValueError):
    """A writer asked for a status change the state machine does not declare (a bug, never data)."""


def check_order(source: OrderStatus, target: OrderStatus) -> None:
    if (source, target) not in ORDER_EDGES:
        raise IllegalTransition(f"order {source.value} -> {target.value} is not a declared transition")


def check_run(source: RunStatus, target: RunStatus) -> None:
    if (source, target) not in RUN_EDGES:
        raise IllegalTransition(f"run {source.value} -> {target.value} is not a declared transition")


def order_sources(target: OrderStatus) -> tuple[OrderStatus, ...]:
    """Every status ``target`` may be entered from (the condition of a write that only names its target)."""
    return tuple(src for src, dst in ORDER_EDGES if dst is target)


def order_event(target: OrderStatus) -> str:
    """The event type written in the same transaction as an order's move to ``target``."""
    return f"order_{target.value}"
