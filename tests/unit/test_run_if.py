"""``run_if`` (success | always | failure | drifted) and ``drift``: what validation accepts, what the
graph decides (ready, skipped, not needed), the run's verdict, and the planner's steps."""

from __future__ import annotations

from typing import Any

import pytest
from support.planning import running_snapshot

from lambda_runtime.job import dag
from lambda_runtime.job.model import Job
from lambda_runtime.job.validate import JobValidationError, parse_job
from lambda_runtime.orchestrator import planner
from lambda_runtime.orchestrator.planner import Arrived
from lambda_runtime.schema.contract import OrderResult
from lambda_runtime.schema.status import OrderStatus as S
from lambda_runtime.schema.status import RunStatus as R

N = dag.NodeState


def problems(raw: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    with pytest.raises(JobValidationError) as info:
        parse_job(raw)
    return [(p.order, p.field, p.message) for p in info.value.problems]


# ---- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("run_if", ["always", "failure", "drifted"])
def test_a_condition_needs_something_to_follow(run_if: str) -> None:
    raw = {"name": "demo", "orders": [{"name": "cleanup", "cmds": ["x"], "run_if": run_if}]}
    assert problems(raw) == [("cleanup", "run_if", f"'{run_if}' follows dependencies: it needs depends_on")]


@pytest.mark.parametrize("run_if", ["success", "always", "failure", "drifted"])
def test_every_condition_parses_after_a_dependency(run_if: str) -> None:
    raw = {"name": "demo", "orders": [{"name": "a", "cmds": ["x"]},
                                      {"name": "b", "cmds": ["x"], "depends_on": ["a"], "run_if": run_if}]}
    assert parse_job(raw).order("b").run_if == run_if


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ({"run_if": "sometimes", "depends_on": ["a"]},
         [("b", "run_if", "Input should be 'success', 'always', 'failure' or 'drifted'")]),
        ({"drift": True, "command": "apply"}, [("b", "drift", "only a plan order detects drift")]),
        ({"drift": "yes"}, [("b", "drift", "Input should be a valid boolean")]),
    ],
)
def test_condition_and_drift_rules(order: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    raw = {"name": "demo", "orders": [{"name": "a", "cmds": ["x"]}, {"name": "b", "cmds": ["x"], **order}]}
    assert problems(raw) == expected


def test_drift_defaults_off_and_is_for_plan_orders() -> None:
    raw = {"name": "demo", "orders": [{"name": "a", "cmds": ["x"]}, {"name": "b", "cmds": ["x"], "drift": True}]}
    parsed = parse_job(raw)
    assert (parsed.order("a").drift, parsed.order("b").drift, parsed.order("b").command) == (False, True, "plan")


# ---- the graph: what is ready, skipped, not needed ------------------------------------------------

@pytest.mark.parametrize(
    ("dep", "dep_must", "run_if", "ready", "skip", "unneeded"),
    [
        (S.SUCCEEDED, True, "success", True, False, None),
        (S.FAILED, True, "success", False, True, None),
        (S.SUCCEEDED, True, "always", True, False, None),
        (S.FAILED, True, "always", True, False, None),
        (S.SKIPPED, True, "always", True, False, None),
        (S.CANCELLED, True, "always", True, False, None),
        (S.SUCCEEDED, True, "failure", False, True, "run_if: failure, and every dependency succeeded"),
        (S.DRIFTED, True, "failure", False, True, "run_if: failure, and every dependency succeeded"),
        (S.FAILED, True, "failure", True, False, None),
        (S.TIMED_OUT, True, "failure", True, False, None),
        (S.FAILED, False, "failure", True, False, None),  # an advisory failure is still a failure
        (S.DRIFTED, True, "drifted", True, False, None),
        (S.SUCCEEDED, True, "drifted", False, True, "run_if: drifted, and no dependency found drift"),
        (S.FAILED, True, "drifted", False, True, None),  # blocked by the failure, not "not needed"
        (S.DRIFTED, True, "success", True, False, None),  # drift counts as success for a dependent
    ],
)
def test_one_dependency(dep: S, dep_must: bool, run_if: str, ready: bool, skip: bool, unneeded: str | None) -> None:
    p = dag.plan({"a": N(dep, dep_must, ()), "b": N(S.QUEUED, True, ("a",), run_if)})
    assert ("b" in p.ready, "b" in p.skip, p.unneeded.get("b")) == (ready, skip, unneeded)
    assert p.all_terminal is skip


@pytest.mark.parametrize("run_if", ["always", "failure", "drifted", "success"])
def test_nothing_runs_before_its_dependencies_ended(run_if: str) -> None:
    p = dag.plan({"a": N(S.RUNNING, True, ()), "b": N(S.QUEUED, True, ("a",), run_if)})
    assert (p.ready, p.skip, p.unneeded) == ([], {}, {})


def test_failure_handler_runs_for_a_failure_further_up() -> None:
    p = dag.plan({"a": N(S.FAILED, True, ()), "b": N(S.SKIPPED, True, ("a",)),
                  "notify": N(S.QUEUED, True, ("b",), "failure")})
    assert p.ready == ["notify"] and p.skip == {}


def test_drifted_waits_for_every_dependency_before_deciding() -> None:
    p = dag.plan({"a": N(S.FAILED, True, ()), "b": N(S.RUNNING, True, ()),
                  "issue": N(S.QUEUED, True, ("a", "b"), "drifted")})
    assert (p.ready, p.skip) == ([], {})


def test_orders_after_an_unneeded_one_are_unneeded_too() -> None:
    p = dag.plan({"a": N(S.SUCCEEDED, True, ()), "notify": N(S.QUEUED, True, ("a",), "failure"),
                  "page": N(S.QUEUED, True, ("notify",))})
    assert p.skip == {"notify": "a", "page": "notify"}
    assert p.unneeded == {"notify": "run_if: failure, and every dependency succeeded",
                          "page": "it follows 'notify', which was not needed"}


@pytest.mark.parametrize(
    ("nodes", "status"),
    [
        ({"a": N(S.FAILED, True, ()), "cleanup": N(S.SUCCEEDED, True, ("a",), "always")}, R.FAILED),
        ({"a": N(S.SUCCEEDED, True, ()), "cleanup": N(S.FAILED, True, ("a",), "always")}, R.FAILED),
        ({"a": N(S.SUCCEEDED, True, ()), "cleanup": N(S.FAILED, False, ("a",), "always")}, R.SUCCEEDED),
        ({"a": N(S.SUCCEEDED, True, ()), "notify": N(S.SKIPPED, True, ("a",), "failure")}, R.SUCCEEDED),
        ({"a": N(S.SUCCEEDED, True, ()), "notify": N(S.SKIPPED, True, ("a",), "failure"),
          "page": N(S.SKIPPED, True, ("notify",))}, R.SUCCEEDED),
        ({"a": N(S.FAILED, True, ()), "notify": N(S.SUCCEEDED, True, ("a",), "failure")}, R.FAILED),
        ({"a": N(S.FAILED, False, ()), "notify": N(S.SUCCEEDED, True, ("a",), "failure")}, R.SUCCEEDED),
        ({"plan": N(S.DRIFTED, True, ())}, R.DRIFTED),
        ({"plan": N(S.DRIFTED, True, ()), "issue": N(S.SUCCEEDED, True, ("plan",), "drifted")}, R.DRIFTED),
        ({"plan": N(S.SUCCEEDED, True, ()), "issue": N(S.SKIPPED, True, ("plan",), "drifted")}, R.SUCCEEDED),
        ({"plan": N(S.DRIFTED, True, ()), "issue": N(S.FAILED, True, ("plan",), "drifted")}, R.FAILED),
        ({"plan": N(S.DRIFTED, False, ())}, R.DRIFTED),
        ({"a": N(S.SUCCEEDED, True, ()), "b": N(S.SKIPPED, True, ("a",))}, R.FAILED),  # a plain skip counts
    ],
    ids=["always after a failure", "always fails itself", "advisory always fails", "failure handler not needed",
         "after the unneeded handler", "failure handler ran", "handler after an advisory failure", "drifted plan",
         "drift reported", "no drift: issue not needed", "drift reporter failed", "advisory drift",
         "a success order skipped"],
)
def test_verdict(nodes: dict[str, dag.NodeState], status: R) -> None:
    assert dag.job_status(nodes) is status


# ---- the planner ------------------------------------------------------------------------------------

NOW = 1_000_000.0
RULES = planner.Rules(watchdog_grace_seconds=60)


def pipeline(*orders: dict[str, Any]) -> Job:
    return parse_job({"name": "demo", "orders": [{"cmds": ["x"], **o} for o in orders]})


def step(job: Job, status: dict[str, S], results: dict[str, S] | None = None) -> planner.Decision:
    arrived = {n: Arrived(OrderResult(run_id="r1", order=n, attempt=1, status=st,
                                      exit_code={S.SUCCEEDED: 0, S.DRIFTED: 2}.get(st, 1)), NOW - 1)
               for n, st in (results or {}).items()}
    return planner.plan(running_snapshot(job, status, NOW), arrived, frozenset(), NOW, RULES)


def moves(decision: planner.Decision) -> dict[str, S]:
    return {s.transition.name: s.transition.to for s in (*decision.settle, *decision.start)}


def transition(decision: planner.Decision, name: str) -> Any:
    (found,) = [s.transition for s in (*decision.settle, *decision.start) if s.transition.name == name]
    return found


CLEANUP = pipeline({"name": "deploy"}, {"name": "cleanup", "depends_on": ["deploy"], "run_if": "always"})


def test_always_runs_after_a_failure_and_the_run_stays_failed() -> None:
    d = step(CLEANUP, {"deploy": S.RUNNING}, {"deploy": S.FAILED})
    assert moves(d) == {"deploy": S.FAILED, "cleanup": S.RUNNING}
    assert [s.transition.name for s in d.start] == ["cleanup"] and d.finalize is None
    d = step(CLEANUP, {"deploy": S.FAILED, "cleanup": S.RUNNING}, {"cleanup": S.SUCCEEDED})
    assert moves(d) == {"cleanup": S.SUCCEEDED} and d.finalize is R.FAILED


def test_always_runs_after_a_success_too() -> None:
    d = step(CLEANUP, {"deploy": S.RUNNING}, {"deploy": S.SUCCEEDED})
    assert moves(d) == {"deploy": S.SUCCEEDED, "cleanup": S.RUNNING}
    d = step(CLEANUP, {"deploy": S.SUCCEEDED, "cleanup": S.RUNNING}, {"cleanup": S.SUCCEEDED})
    assert d.finalize is R.SUCCEEDED


def test_always_that_fails_itself_fails_a_succeeded_run() -> None:
    d = step(CLEANUP, {"deploy": S.SUCCEEDED, "cleanup": S.RUNNING}, {"cleanup": S.FAILED})
    assert moves(d) == {"cleanup": S.FAILED} and d.finalize is R.FAILED


NOTIFY = pipeline({"name": "deploy"}, {"name": "notify", "depends_on": ["deploy"], "run_if": "failure"},
                  {"name": "page", "depends_on": ["notify"]})


def test_failure_is_not_needed_when_all_succeed_and_the_run_succeeds() -> None:
    d = step(NOTIFY, {"deploy": S.RUNNING}, {"deploy": S.SUCCEEDED})
    assert moves(d) == {"deploy": S.SUCCEEDED, "notify": S.SKIPPED, "page": S.SKIPPED}
    assert d.start == [] and d.finalize is R.SUCCEEDED
    notify, page = transition(d, "notify"), transition(d, "page")
    assert notify.fields == {"reason": "not needed: run_if: failure, and every dependency succeeded",
                             "finished_at": NOW}
    assert notify.detail == {"blocked_by": "deploy", "unneeded": True}
    assert page.fields == {"reason": "not needed: it follows 'notify', which was not needed", "finished_at": NOW}
    assert page.detail == {"blocked_by": "notify", "unneeded": True}


def test_failure_runs_after_a_failure_and_the_run_stays_failed() -> None:
    d = step(NOTIFY, {"deploy": S.RUNNING}, {"deploy": S.FAILED})
    assert moves(d) == {"deploy": S.FAILED, "notify": S.RUNNING}
    d = step(NOTIFY, {"deploy": S.FAILED, "notify": S.RUNNING}, {"notify": S.SUCCEEDED})
    assert moves(d) == {"notify": S.SUCCEEDED, "page": S.RUNNING}
    d = step(NOTIFY, {"deploy": S.FAILED, "notify": S.SUCCEEDED, "page": S.RUNNING}, {"page": S.SUCCEEDED})
    assert d.finalize is R.FAILED


DRIFT = pipeline({"name": "plan", "drift": True}, {"name": "issue", "depends_on": ["plan"], "run_if": "drifted"})


def test_drifted_runs_only_after_a_drifted_dependency() -> None:
    d = step(DRIFT, {"plan": S.RUNNING}, {"plan": S.DRIFTED})
    assert moves(d) == {"plan": S.DRIFTED, "issue": S.RUNNING}
    d = step(DRIFT, {"plan": S.DRIFTED, "issue": S.RUNNING}, {"issue": S.SUCCEEDED})
    assert moves(d) == {"issue": S.SUCCEEDED} and d.finalize is R.DRIFTED


def test_drifted_is_not_needed_without_drift() -> None:
    d = step(DRIFT, {"plan": S.RUNNING}, {"plan": S.SUCCEEDED})
    assert moves(d) == {"plan": S.SUCCEEDED, "issue": S.SKIPPED} and d.finalize is R.SUCCEEDED
    assert transition(d, "issue").fields == {"reason": "not needed: run_if: drifted, and no dependency found drift",
                                              "finished_at": NOW}


def test_drifted_is_skipped_after_a_failed_plan() -> None:
    d = step(DRIFT, {"plan": S.RUNNING}, {"plan": S.FAILED})
    assert moves(d) == {"plan": S.FAILED, "issue": S.SKIPPED} and d.finalize is R.FAILED
    assert transition(d, "issue").fields == {"reason": "dependency 'plan' did not succeed", "finished_at": NOW}


def test_a_drifted_plan_makes_the_run_drifted() -> None:
    job = pipeline({"name": "plan", "drift": True})
    d = step(job, {"plan": S.RUNNING}, {"plan": S.DRIFTED})
    assert moves(d) == {"plan": S.DRIFTED} and d.finalize is R.DRIFTED
    assert transition(d, "plan").fields["exit_code"] == 2 and transition(d, "plan").fields["reason"] is None


def test_exit_2_of_an_order_without_drift_is_a_failure() -> None:
    job = pipeline({"name": "plan"}, {"name": "issue", "depends_on": ["plan"], "run_if": "drifted"},
                   {"name": "after", "depends_on": ["plan"]})
    d = step(job, {"plan": S.RUNNING}, {"plan": S.DRIFTED})
    assert moves(d) == {"plan": S.FAILED, "issue": S.SKIPPED, "after": S.SKIPPED} and d.finalize is R.FAILED
    assert transition(d, "plan").fields["reason"] == "a command exited with code 2"


def test_a_drifted_dependency_lets_a_success_order_run() -> None:
    job = pipeline({"name": "plan", "drift": True}, {"name": "report", "depends_on": ["plan"]})
    d = step(job, {"plan": S.RUNNING}, {"plan": S.DRIFTED})
    assert moves(d) == {"plan": S.DRIFTED, "report": S.RUNNING}
