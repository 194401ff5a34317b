"""The orchestrator's rules, one table row each: what a step writes and does, decided without AWS.

Each case gives the run's state (orders: status, must_succeed, dependencies), the results that
arrived, the control signals and the run's flags, and expects the exact transitions (``name ->
status``), the effects they license, the orders started, and the run's final status if any.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lambda_runtime.orchestrator import planner
from lambda_runtime.orchestrator.planner import Arrived, Effect
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import OrderResult
from lambda_runtime.schema.records import OrderInput, OrderRecord, RunRecord, RunSnapshot
from lambda_runtime.schema.status import OrderStatus as S
from lambda_runtime.schema.status import RunStatus as R

NOW = 1_000_000.0
RULES = planner.Rules(watchdog_grace_seconds=60, vcs_update_interval_seconds=10, vcs_enabled=True)


@dataclass
class Case:
    orders: dict[str, tuple[S, bool, tuple[str, ...]]]
    results: dict[str, tuple[S, str]] = field(default_factory=dict)  # order -> (status, producer)
    signals: frozenset[str] = frozenset()
    run_status: R = R.RUNNING
    cancelled: bool = False
    deadline: float = NOW + 3600
    settle: dict[str, S] = field(default_factory=dict)
    stops: set[str] = field(default_factory=set)
    start: list[str] = field(default_factory=list)
    finalize: R | None = None


CASES = {
    "roots start together": Case(
        {"a": (S.QUEUED, True, ()), "b": (S.QUEUED, True, ()), "c": (S.QUEUED, True, ("a", "b"))},
        start=["a", "b"],
    ),
    "a result unblocks its dependent in the same step": Case(
        {"a": (S.RUNNING, True, ()), "b": (S.QUEUED, True, ("a",))},
        results={"a": (S.SUCCEEDED, "worker")},
        settle={"a": S.SUCCEEDED}, start=["b"],
    ),
    "a failure skips the whole subtree at once": Case(
        {"a": (S.RUNNING, True, ()), "b": (S.QUEUED, True, ("a",)), "c": (S.QUEUED, True, ("b",)),
         "d": (S.QUEUED, True, ())},
        results={"a": (S.FAILED, "worker")},
        settle={"a": S.FAILED, "b": S.SKIPPED, "c": S.SKIPPED}, start=["d"],
    ),
    "a tolerated failure lets dependents run": Case(
        {"lint": (S.RUNNING, False, ()), "pkg": (S.QUEUED, True, ("lint",))},
        results={"lint": (S.FAILED, "worker")},
        settle={"lint": S.FAILED}, start=["pkg"],
    ),
    "a skipped advisory order still skips its dependents": Case(
        {"deploy-test": (S.RUNNING, True, ()), "smoke": (S.QUEUED, False, ("deploy-test",)),
         "deploy-prd": (S.QUEUED, True, ("smoke",))},
        results={"deploy-test": (S.FAILED, "worker")},
        settle={"deploy-test": S.FAILED, "smoke": S.SKIPPED, "deploy-prd": S.SKIPPED}, finalize=R.FAILED,
    ),
    "the last result finalizes the run": Case(
        {"a": (S.SUCCEEDED, True, ()), "b": (S.RUNNING, True, ("a",))},
        results={"b": (S.SUCCEEDED, "worker")},
        settle={"b": S.SUCCEEDED}, finalize=R.SUCCEEDED,
    ),
    "a required failure fails the run": Case(
        {"a": (S.RUNNING, True, ()), "b": (S.QUEUED, True, ("a",))},
        results={"a": (S.FAILED, "worker")},
        settle={"a": S.FAILED, "b": S.SKIPPED}, finalize=R.FAILED,
    ),
    "only tolerated failures: the run succeeds": Case(
        {"a": (S.RUNNING, False, ())}, results={"a": (S.FAILED, "worker")},
        settle={"a": S.FAILED}, finalize=R.SUCCEEDED,
    ),
    "a watchdog result stops the late worker": Case(
        {"a": (S.RUNNING, True, ())}, results={"a": (S.TIMED_OUT, "watchdog")},
        settle={"a": S.TIMED_OUT}, stops={"a"}, finalize=R.TIMED_OUT,
    ),
    "a result for an order not running is ignored": Case(
        {"a": (S.SUCCEEDED, True, ()), "b": (S.RUNNING, True, ())},
        results={"a": (S.FAILED, "worker")},
    ),
    "cancel: queued cancelled, running cancelled and stopped": Case(
        {"a": (S.RUNNING, True, ()), "b": (S.QUEUED, True, ("a",)), "c": (S.SUCCEEDED, True, ())},
        cancelled=True,
        settle={"a": S.CANCELLED, "b": S.CANCELLED}, stops={"a"}, finalize=R.CANCELLED,
    ),
    "cancel after a result: the result is recorded first": Case(
        {"a": (S.RUNNING, True, ()), "b": (S.QUEUED, True, ("a",))},
        results={"a": (S.SUCCEEDED, "worker")}, cancelled=True,
        settle={"a": S.SUCCEEDED, "b": S.CANCELLED}, finalize=R.CANCELLED,
    ),
    "job timeout signal: running orders time out and are stopped": Case(
        {"a": (S.RUNNING, True, ()), "b": (S.QUEUED, True, ("a",))},
        signals=frozenset({layout.SIGNAL_JOB_TIMEOUT}),
        settle={"a": S.TIMED_OUT, "b": S.CANCELLED}, stops={"a"}, finalize=R.TIMED_OUT,
    ),
    "deadline passed without a signal counts as the job timeout": Case(
        {"a": (S.QUEUED, True, ())}, deadline=NOW - 1,
        settle={"a": S.CANCELLED}, finalize=R.TIMED_OUT,
    ),
    "work done before the deadline was noticed still succeeds": Case(
        {"a": (S.RUNNING, True, ())}, results={"a": (S.SUCCEEDED, "worker")}, deadline=NOW - 1,
        settle={"a": S.SUCCEEDED}, finalize=R.SUCCEEDED,
    ),
    "packaging failed: finalized failed with no orders": Case({}, run_status=R.PACKAGING_FAILED, finalize=R.FAILED),
    "packaging failed and cancelled: cancelled": Case(
        {}, run_status=R.PACKAGING_FAILED, cancelled=True, finalize=R.CANCELLED),
    "still packaging: nothing to do": Case({}, run_status=R.PACKAGING),
    "cancelled before packaging: cancelled": Case({}, run_status=R.ACCEPTED, cancelled=True, finalize=R.CANCELLED),
    "timed out before packaging: timed out": Case(
        {}, run_status=R.PACKAGING, signals=frozenset({layout.SIGNAL_JOB_TIMEOUT}), finalize=R.TIMED_OUT),
}


def snapshot(case: Case) -> RunSnapshot:
    run = RunRecord(run_id="r1", status=case.run_status, trace_id="r1:1", deadline=case.deadline,
                    cancel_requested=case.cancelled, vcs="github", vcs_updated_at=0)
    orders = {
        n: OrderRecord(name=n, status=st, must_succeed=must, depends_on=deps, timeout=60, attempt=1 if st != S.QUEUED
                       else 0, dispatched_at=NOW - 5 if st != S.QUEUED else None, watchdog="arn:x")
        for n, (st, must, deps) in case.orders.items()
    }
    return RunSnapshot(run, orders)


def arrived(case: Case) -> dict[str, Arrived]:
    return {
        n: Arrived(OrderResult(run_id="r1", order=n, attempt=1, status=st, producer=by, exit_code=0), NOW - 1)
        for n, (st, by) in case.results.items()
    }


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_rule(case: Case) -> None:
    decision = planner.plan(snapshot(case), arrived(case), case.signals, NOW, RULES)
    assert {s.transition.name: s.transition.to for s in decision.settle} == case.settle
    assert {s.transition.name for s in decision.settle if s.effect is Effect.STOP_WORKER} == case.stops
    assert [s.transition.name for s in decision.start] == case.start
    assert all(s.effect is Effect.DISPATCH and s.transition.to is S.RUNNING for s in decision.start)
    assert decision.finalize == case.finalize


def test_a_finalized_run_gets_no_decision() -> None:
    snap = snapshot(CASES["roots start together"])
    assert snap.run is not None
    snap.run.finalized = True
    decision = planner.plan(snap, {}, frozenset(), NOW, RULES)
    assert decision.transitions == [] and decision.finalize is None


def test_start_records_attempt_dispatch_time_and_log_key() -> None:
    snap = snapshot(Case({"a": (S.QUEUED, True, ())}))
    (step,) = planner.plan(snap, {}, frozenset(), NOW, RULES).start
    assert step.transition.from_status == (S.QUEUED,)
    assert step.transition.fields == {"attempt": 1, "dispatched_at": NOW, "log_key": layout.log_key("r1", "a")}


def test_ingest_keeps_the_result_fields_and_falls_back_to_dispatch_and_report_times() -> None:
    snap = snapshot(Case({"a": (S.RUNNING, True, ())}))
    result = OrderResult(run_id="r1", order="a", attempt=1, status=S.FAILED, exit_code=3, error="boom",
                         log_tail="x" * 10_000, producer="worker")
    (step,) = planner.plan(snap, {"a": Arrived(result, NOW - 1)}, frozenset(), NOW, RULES).settle
    fields = step.transition.fields
    assert fields["exit_code"] == 3 and fields["reason"] == "boom" and fields["reported_by"] == "worker"
    assert fields["started_at"] == NOW - 5 and fields["finished_at"] == NOW - 1
    assert len(fields["log_tail"]) == 4096


def test_running_orders_without_a_watchdog_are_repaired() -> None:
    snap = snapshot(Case({"a": (S.RUNNING, True, ()), "b": (S.RUNNING, True, ())}))
    snap.orders["b"].watchdog = None
    assert planner.plan(snap, {}, frozenset(), NOW, RULES).repair_watchdogs == ["b"]


@pytest.mark.parametrize(
    ("vcs_enabled", "updated_ago", "changed", "expected"),
    [(True, 60, True, True), (True, 2, True, False), (False, 60, True, False), (True, 60, False, False)],
)
def test_progress_is_coalesced(vcs_enabled: bool, updated_ago: float, changed: bool, expected: bool) -> None:
    snap = snapshot(Case({"a": (S.QUEUED if changed else S.RUNNING, True, ()), "b": (S.RUNNING, True, ())}))
    assert snap.run is not None
    snap.run.vcs_updated_at = NOW - updated_ago
    rules = planner.Rules(watchdog_grace_seconds=60, vcs_update_interval_seconds=10, vcs_enabled=vcs_enabled)
    assert planner.plan(snap, {}, frozenset(), NOW, rules).publish_progress is expected


def test_watchdog_deadline_and_url_lifetime() -> None:
    order = OrderRecord(name="a", timeout=600, dispatched_at=NOW, inputs=(OrderInput("b", "x"),))
    assert planner.watchdog_deadline(order, 60) == NOW + 660
    assert planner.reporting_margin(60) == 5.0 and planner.reporting_margin(4) == 2.0
    assert planner.url_lifetime(600, 60, 3600) == 4260


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        OrderResult(run_id="other", order="a", attempt=1, status=S.SUCCEEDED).model_dump_json().encode(),
        OrderResult(run_id="r1", order="b", attempt=1, status=S.SUCCEEDED).model_dump_json().encode(),
        OrderResult(run_id="r1", order="a", attempt=1, status=S.SKIPPED).model_dump_json().encode(),
    ],
    ids=["garbage", "another run", "another order", "a status no worker reports"],
)
def test_a_forged_or_broken_result_fails_the_order(raw: bytes) -> None:
    result = planner.read_result(raw, run_id="r1", order=OrderRecord(name="a", attempt=2))
    assert result.status is S.FAILED and result.producer == "engine" and result.attempt == 2
    assert result.error is not None and result.error.startswith("unreadable result")


def test_a_valid_result_is_taken_as_is() -> None:
    raw = OrderResult(run_id="r1", order="a", attempt=1, status=S.SUCCEEDED, exit_code=0).model_dump_json().encode()
    result = planner.read_result(raw, run_id="r1", order=OrderRecord(name="a", attempt=1))
    assert result.status is S.SUCCEEDED and result.producer == "worker"


# ---- environments with rules: awaiting approval, release, rejection, timers, the per-run cap -------


def gated_snapshot(**orders: dict) -> RunSnapshot:
    """Orders given as keyword dicts of OrderRecord fields (status, depends_on, approvals_needed, ...)."""
    run = RunRecord(run_id="r1", status=R.RUNNING, trace_id="r1:1", deadline=NOW + 3600)
    return RunSnapshot(run, {n: OrderRecord(name=n, timeout=60, watchdog="arn:x", **f) for n, f in orders.items()})


def moves(decision: planner.Decision) -> dict[str, S]:
    return {s.transition.name: s.transition.to for s in (*decision.settle, *decision.start)}


def test_a_ready_gated_order_waits_and_its_dependents_stay_queued() -> None:
    snap = gated_snapshot(plan={"status": S.SUCCEEDED}, apply={"depends_on": ("plan",), "approvals_needed": 2},
                          smoke={"depends_on": ("apply",)})
    decision = planner.plan(snap, {}, frozenset(), NOW, RULES)
    assert moves(decision) == {"apply": S.AWAITING_APPROVAL} and decision.finalize is None
    (step,) = decision.settle
    assert step.transition.fields == {"awaiting_since": NOW} and step.effect is None
    assert step.transition.detail == {"environment": None, "needed": 2, "wait_seconds": 0}


@pytest.mark.parametrize(
    ("approvals", "needed", "released"),
    [
        ((), 2, False),
        (({"by": "alice"},), 2, False),
        (({"by": "alice"}, {"by": "ALICE"}), 2, False),  # one person, however spelt, counts once
        (({"by": "alice"}, {"by": "bob"}), 2, True),
        (({"by": "me", "owner": True},), 3, True),  # the operator of a local run owns the deployment
    ],
    ids=["none", "one of two", "the same reviewer twice", "two distinct", "the local owner"],
)
def test_a_waiting_order_is_released_by_enough_distinct_approvals(approvals: tuple, needed: int,
                                                                   released: bool) -> None:
    snap = gated_snapshot(apply={"status": S.AWAITING_APPROVAL, "approvals_needed": needed, "approvals": approvals,
                                 "awaiting_since": NOW - 10})
    decision = planner.plan(snap, {}, frozenset(), NOW, RULES)
    assert [s.transition.name for s in decision.start] == (["apply"] if released else [])
    if released:
        assert decision.start[0].transition.from_status == (S.AWAITING_APPROVAL,)
        assert decision.start[0].effect is Effect.DISPATCH


def test_a_rejection_rejects_and_skips_the_dependents_in_the_same_step() -> None:
    snap = gated_snapshot(apply={"status": S.AWAITING_APPROVAL, "approvals_needed": 1, "must_succeed": False,
                                 "rejection": {"by": "bob", "at": NOW - 1, "reason": "freeze"}},
                          smoke={"depends_on": ("apply",)})
    decision = planner.plan(snap, {}, frozenset(), NOW, RULES)
    assert moves(decision) == {"apply": S.REJECTED, "smoke": S.SKIPPED}  # even an advisory order's "no"
    assert decision.finalize is R.FAILED  # the required order below was skipped
    assert decision.settle[0].transition.fields["reason"] == "rejected by bob: freeze"


def test_a_required_rejection_fails_the_run() -> None:
    snap = gated_snapshot(apply={"status": S.AWAITING_APPROVAL, "approvals_needed": 1,
                                 "rejection": {"by": "bob", "at": NOW - 1}})
    assert planner.plan(snap, {}, frozenset(), NOW, RULES).finalize is R.FAILED


def test_a_wait_timer_holds_the_order_until_it_ends() -> None:
    waiting = {"status": S.AWAITING_APPROVAL, "wait_seconds": 300, "awaiting_since": NOW - 100, "timer": "arn:t"}
    assert planner.plan(gated_snapshot(a=waiting), {}, frozenset(), NOW, RULES).start == []
    later = planner.plan(gated_snapshot(a=waiting), {}, frozenset(), NOW + 200, RULES)
    assert [s.transition.name for s in later.start] == ["a"]
    entering = planner.plan(gated_snapshot(a={"wait_seconds": 300}), {}, frozenset(), NOW, RULES)
    assert entering.settle[0].effect is Effect.START_TIMER


def test_a_waiting_order_without_its_timer_gets_one() -> None:
    snap = gated_snapshot(a={"status": S.AWAITING_APPROVAL, "wait_seconds": 300, "awaiting_since": NOW - 10},
                          b={"status": S.AWAITING_APPROVAL, "wait_seconds": 300, "awaiting_since": NOW - 10,
                             "timer": "arn:t"})
    assert planner.plan(snap, {}, frozenset(), NOW, RULES).repair_timers == ["a"]


@pytest.mark.parametrize(("cancelled", "expected"), [(True, S.CANCELLED), (False, S.TIMED_OUT)])
def test_cancel_or_job_timeout_ends_a_waiting_order(cancelled: bool, expected: S) -> None:
    snap = gated_snapshot(a={"status": S.AWAITING_APPROVAL, "approvals_needed": 1})
    assert snap.run is not None
    snap.run.cancel_requested = cancelled
    signals = frozenset() if cancelled else frozenset({layout.SIGNAL_JOB_TIMEOUT})
    decision = planner.plan(snap, {}, signals, NOW, RULES)
    assert moves(decision) == {"a": expected} and not decision.settle[0].effect


def test_the_per_run_cap_keeps_further_orders_queued() -> None:
    rules = planner.Rules(watchdog_grace_seconds=60, max_running_per_run=3)
    snap = gated_snapshot(r={"status": S.RUNNING, "attempt": 1}, **{f"q{i}": {} for i in range(5)})
    assert [s.transition.name for s in planner.plan(snap, {}, frozenset(), NOW, rules).start] == ["q0", "q1"]
    full = gated_snapshot(**{f"r{i}": {"status": S.RUNNING, "attempt": 1} for i in range(3)}, q={})
    assert planner.plan(full, {}, frozenset(), NOW, rules).start == []


def test_an_approval_since_the_last_pr_update_publishes_progress() -> None:
    waiting = {"status": S.AWAITING_APPROVAL, "approvals_needed": 2, "approvals": ({"by": "bob", "at": NOW - 30},)}
    snap = gated_snapshot(a=waiting)
    assert snap.run is not None
    snap.run.vcs, snap.run.vcs_updated_at = "github", NOW - 60
    decision = planner.plan(snap, {}, frozenset(), NOW, RULES)
    assert decision.transitions == [] and decision.publish_progress is True
    snap.run.vcs_updated_at = NOW - 20  # the comment already shows it
    assert planner.plan(snap, {}, frozenset(), NOW, RULES).publish_progress is False


# ---- pull requests: a superseded run, and orders that never ran ----------------------------------------


def test_a_superseded_run_lets_a_running_apply_finish_and_stops_the_rest() -> None:
    snap = gated_snapshot(apply={"status": S.RUNNING, "attempt": 1, "command": "apply", "dispatch_ref": "b1"},
                          plan={"status": S.RUNNING, "attempt": 1, "dispatch_ref": "b2"},
                          later={"depends_on": ("apply",)})
    assert snap.run is not None
    snap.run.cancel_requested, snap.run.cancel_running = True, False
    decision = planner.plan(snap, {}, frozenset(), NOW, RULES)
    assert moves(decision) == {"plan": S.CANCELLED, "later": S.CANCELLED} and decision.finalize is None
    # its result arrives: the run ends cancelled, with the apply's own outcome kept
    snap.orders["plan"].status = snap.orders["later"].status = S.CANCELLED
    done = planner.plan(snap, {"apply": Arrived(OrderResult(run_id="r1", order="apply", attempt=1,
                                                              status=S.SUCCEEDED, producer="worker"), NOW)},
                        frozenset(), NOW, RULES)
    assert moves(done) == {"apply": S.SUCCEEDED} and done.finalize is R.CANCELLED


def test_a_job_timeout_stops_a_running_apply_even_of_a_superseded_run() -> None:
    snap = gated_snapshot(apply={"status": S.RUNNING, "attempt": 1, "command": "apply"})
    assert snap.run is not None
    snap.run.cancel_requested, snap.run.cancel_running = True, False
    decision = planner.plan(snap, {}, frozenset({layout.SIGNAL_JOB_TIMEOUT}), NOW, RULES)
    assert moves(decision) == {"apply": S.CANCELLED} and decision.settle[0].effect is planner.Effect.STOP_WORKER


@pytest.mark.parametrize("never_ran", [S.LOCKED, S.BLOCKED])
def test_a_locked_or_blocked_order_skips_its_dependents_even_when_advisory(never_ran: S) -> None:
    snap = gated_snapshot(apply={"status": never_ran, "must_succeed": False}, notify={"depends_on": ("apply",)})
    decision = planner.plan(snap, {}, frozenset(), NOW, RULES)
    assert moves(decision) == {"notify": S.SKIPPED}
