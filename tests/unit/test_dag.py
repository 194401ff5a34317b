"""Graph logic: cycles, layers, the one-pass transitive skip cascade, the job verdict."""

from __future__ import annotations

from lambda_runtime.job import dag
from lambda_runtime.schema.status import OrderStatus as S
from lambda_runtime.schema.status import RunStatus


def nodes(spec: dict[str, tuple[S, bool, tuple[str, ...]]]) -> dict[str, dag.NodeState]:
    return {n: dag.NodeState(st, ms, deps) for n, (st, ms, deps) in spec.items()}


def test_three_level_cascade_in_one_pass() -> None:
    plan = dag.plan(
        nodes(
            {
                "a": (S.FAILED, True, ()),
                "b": (S.QUEUED, True, ("a",)),
                "c": (S.QUEUED, True, ("b",)),
                "d": (S.QUEUED, True, ("c",)),
                "e": (S.QUEUED, True, ()),
            }
        )
    )
    assert plan.skip == {"b": "a", "c": "b", "d": "c"}
    assert plan.ready == ["e"]
    assert not plan.all_terminal


def test_a_skipped_advisory_order_still_blocks_everything_below_it() -> None:
    """deploy-test failed, so smoke (must_succeed: false) is skipped, so deploy-prd must be too."""
    plan = dag.plan(
        nodes(
            {
                "deploy-test": (S.FAILED, True, ()),
                "smoke": (S.QUEUED, False, ("deploy-test",)),
                "deploy-prd": (S.QUEUED, True, ("smoke",)),
            }
        )
    )
    assert plan.skip == {"smoke": "deploy-test", "deploy-prd": "smoke"}
    assert plan.ready == [] and plan.all_terminal
    later = dag.plan(nodes({"smoke": (S.SKIPPED, False, ()), "deploy-prd": (S.QUEUED, True, ("smoke",))}))
    assert later.skip == {"deploy-prd": "smoke"}  # also when the skip was written by an earlier step


def test_tolerated_failure_lets_dependents_run() -> None:
    plan = dag.plan(nodes({"lint": (S.FAILED, False, ()), "pkg": (S.QUEUED, True, ("lint",))}))
    assert plan.skip == {} and plan.ready == ["pkg"]


def test_waits_for_running_dependencies() -> None:
    plan = dag.plan(nodes({"a": (S.RUNNING, True, ()), "b": (S.QUEUED, True, ("a",))}))
    assert plan.ready == [] and plan.skip == {}


def test_timed_out_and_cancelled_block_like_failures() -> None:
    plan = dag.plan(
        nodes(
            {
                "a": (S.TIMED_OUT, True, ()),
                "b": (S.CANCELLED, True, ()),
                "x": (S.QUEUED, True, ("a",)),
                "y": (S.QUEUED, True, ("b",)),
            }
        )
    )
    assert set(plan.skip) == {"x", "y"}
    assert plan.all_terminal


def test_job_status() -> None:
    ok = nodes({"a": (S.SUCCEEDED, True, ()), "lint": (S.FAILED, False, ())})
    assert dag.job_status(ok) is RunStatus.SUCCEEDED
    assert dag.job_status(ok, cancelled=True) is RunStatus.CANCELLED
    assert dag.job_status(ok, job_timed_out=True) is RunStatus.SUCCEEDED  # done before anyone noticed
    assert dag.job_status(nodes({"a": (S.TIMED_OUT, True, ()), "b": (S.FAILED, True, ())})) is RunStatus.TIMED_OUT
    assert dag.job_status(nodes({"a": (S.SKIPPED, True, ()), "b": (S.FAILED, True, ())})) is RunStatus.FAILED
    assert dag.job_status(nodes({"a": (S.SUCCEEDED, True, ()), "b": (S.TIMED_OUT, False, ())})) is RunStatus.SUCCEEDED


def test_cycles_and_layers() -> None:
    deps = {"a": ("b",), "b": ("a",), "c": ("c",), "d": ()}
    assert dag.find_cycles(deps) == [["a", "b", "a"]]
    assert dag.layers({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}) == [["a"], ["b", "c"], ["d"]]


def test_long_chain_has_no_recursion_limit() -> None:
    deps = {f"n{i}": (f"n{i - 1}",) if i else () for i in range(5000)}
    assert dag.find_cycles(deps) == []
    assert len(dag.layers(deps)) == 5000
