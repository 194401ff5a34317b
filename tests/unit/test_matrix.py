"""``matrix:``: the expansion of one written order into its instances, the rules validation applies
to them, and how the planner runs them (a dependent waits for every instance; ``fail_fast``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.planning import running_snapshot

from lambda_runtime.job import matrix
from lambda_runtime.job.model import Job
from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job
from lambda_runtime.orchestrator import planner
from lambda_runtime.orchestrator.planner import Arrived, Effect
from lambda_runtime.schema.contract import OrderResult
from lambda_runtime.schema.records import RunSnapshot
from lambda_runtime.schema.status import OrderStatus as S
from lambda_runtime.schema.status import RunStatus as R

PY = ["tests[python=3.10]", "tests[python=3.11]", "tests[python=3.12]"]


def matrix_job(**tests: Any) -> dict[str, Any]:
    """``tests`` over three Pythons, and ``report`` after it."""
    return {"name": "demo", "orders": [
        {"name": "tests", "cmds": ["pytest"], "matrix": {"python": ["3.10", "3.11", "3.12"]}, **tests},
        {"name": "report", "cmds": ["./report"], "depends_on": ["tests"]},
    ]}


def problems(raw: Any, policy: ValidationPolicy | None = None) -> list[tuple[str | None, str, str]]:
    with pytest.raises(JobValidationError) as info:
        parse_job(raw, policy)
    return [(p.order, p.field, p.message) for p in info.value.problems]


def one(order: dict[str, Any]) -> dict[str, Any]:
    return {"name": "demo", "orders": [{"name": "t", "cmds": ["x"], **order}]}


# ---- expansion ------------------------------------------------------------------------------------

def test_three_values_become_three_instances_sharing_the_group() -> None:
    doc, found = matrix.expand(matrix_job())
    assert found == []
    assert doc["orders"] == [
        {"name": "tests[python=3.10]", "cmds": ["pytest"], "group": "tests", "env": {"python": "3.10"}},
        {"name": "tests[python=3.11]", "cmds": ["pytest"], "group": "tests", "env": {"python": "3.11"}},
        {"name": "tests[python=3.12]", "cmds": ["pytest"], "group": "tests", "env": {"python": "3.12"}},
        {"name": "report", "cmds": ["./report"], "depends_on": PY},
    ]


def test_parsed_instances_carry_group_env_and_fail_fast_by_default() -> None:
    job = parse_job(matrix_job())
    assert [(o.name, o.group, o.env, o.matrix, o.fail_fast) for o in job.orders] == [
        ("tests[python=3.10]", "tests", {"python": "3.10"}, None, True),
        ("tests[python=3.11]", "tests", {"python": "3.11"}, None, True),
        ("tests[python=3.12]", "tests", {"python": "3.12"}, None, True),
        ("report", None, {}, None, True),
    ]
    assert job.order("report").depends_on == PY


@pytest.mark.parametrize(
    ("matrix_", "env", "names", "envs"),
    [
        ({"os": ["linux", "mac"], "arch": ["x64", "arm64"]}, None,
         ["b[os=linux,arch=x64]", "b[os=linux,arch=arm64]", "b[os=mac,arch=x64]", "b[os=mac,arch=arm64]"],
         [{"os": "linux", "arch": "x64"}, {"os": "linux", "arch": "arm64"}, {"os": "mac", "arch": "x64"},
          {"os": "mac", "arch": "arm64"}]),
        ({"v": [True, 3, 1.5, "x"]}, None, ["b[v=true]", "b[v=3]", "b[v=1.5]", "b[v=x]"],
         [{"v": "true"}, {"v": "3"}, {"v": "1.5"}, {"v": "x"}]),
        ({"v": ["a", "a", "b"]}, None, ["b[v=a]", "b[v=b]"], [{"v": "a"}, {"v": "b"}]),
        ({"v": ["a"]}, {"KEEP": "1"}, ["b[v=a]"], [{"KEEP": "1", "v": "a"}]),
    ],
    ids=["two axes in declaration order", "YAML scalars become text", "duplicates once", "env kept"],
)
def test_combinations(matrix_: dict[str, list[Any]], env: dict[str, str] | None, names: list[str],
                      envs: list[dict[str, str]]) -> None:
    order: dict[str, Any] = {"name": "b", "cmds": ["x"], "matrix": matrix_}
    if env:
        order["env"] = env
    job = parse_job({"name": "demo", "orders": [order]})
    assert [o.name for o in job.orders] == names
    assert [o.env for o in job.orders] == envs
    assert {o.group for o in job.orders} == {"b"}


def test_a_dependency_on_the_base_name_means_every_instance_once() -> None:
    raw = {"name": "demo", "orders": [
        {"name": "t", "cmds": ["x"], "matrix": {"v": ["a", "b"]}},
        {"name": "lint", "cmds": ["x"]},
        {"name": "u", "cmds": ["x"], "depends_on": ["t[v=a]", "t", "lint"]},
    ]}
    doc, found = matrix.expand(raw)
    assert found == []
    assert doc["orders"][-1]["depends_on"] == ["t[v=a]", "t[v=b]", "lint"]
    assert parse_job(raw).order("u").depends_on == ["t[v=a]", "t[v=b]", "lint"]


def test_an_input_from_the_base_name_is_a_problem_naming_an_instance() -> None:
    raw = {"name": "demo", "orders": [
        {"name": "t", "cmds": ["x"], "artifacts": ["out"], "matrix": {"v": ["a", "b"]}},
        {"name": "u", "cmds": ["x"], "depends_on": ["t"], "inputs": [{"from": "t", "path": "out"}]},
    ]}
    found = problems(raw)
    assert ("u", "inputs[0].from", "'t' is a matrix: take the artifact of one instance, e.g. 't[v=a]'") in found
    assert {(o, f) for o, f, _ in found} == {("u", "inputs[0].from")}


def test_an_input_from_one_instance_is_fine() -> None:
    raw = {"name": "demo", "orders": [
        {"name": "t", "cmds": ["x"], "artifacts": ["out"], "matrix": {"v": ["a", "b"]}},
        {"name": "u", "cmds": ["x"], "depends_on": ["t"], "inputs": [{"from": "t[v=b]", "path": "out"}]},
    ]}
    job = parse_job(raw)
    assert [(i.from_, i.path) for i in job.order("u").inputs] == [("t[v=b]", "out")]


@pytest.mark.parametrize(
    ("axes", "accepted"),
    [
        ({"a": [str(i) for i in range(256)]}, True),
        ({"a": [str(i) for i in range(16)], "b": [str(i) for i in range(16)]}, True),
        ({"a": [str(i) for i in range(257)]}, False),
        ({"a": [str(i) for i in range(16)], "b": [str(i) for i in range(17)]}, False),
        ({f"k{i}": ["x", "y"] for i in range(8)}, True),  # 2**8 = 256
    ],
    ids=["256 on one axis", "16 x 16", "257 on one axis", "16 x 17", "2^8"],
)
def test_at_most_256_instances(axes: dict[str, list[str]], accepted: bool) -> None:
    raw = one({"matrix": axes})
    if accepted:
        assert len(parse_job(raw).orders) == 256
    else:
        assert problems(raw) == [("t", "matrix", "expands into more than 256 instances")]
        doc, found = matrix.expand(raw)
        assert found == [("t", "matrix", "expands into more than 256 instances")]
        assert len(doc["orders"]) == 1  # counted, never built


def test_expansion_is_idempotent() -> None:
    raw = matrix_job(fail_fast=False)
    once, found = matrix.expand(raw)
    twice, again = matrix.expand(once)
    assert found == again == [] and twice == once
    assert raw["orders"][0]["matrix"] == {"python": ["3.10", "3.11", "3.12"]}  # the input is not changed
    internal = ValidationPolicy(internal=True)
    assert parse_job(once, internal) == parse_job(raw) == parse_job(raw, internal)


def test_an_expanded_document_from_an_author_is_refused_for_its_groups() -> None:
    once, _ = matrix.expand(matrix_job())
    found = problems(once)
    assert [(o, f) for o, f, _ in found] == [(n, "group") for n in PY]
    assert all(m.startswith("is set by iac-ci only") for _, _, m in found)


@pytest.mark.parametrize(
    ("order", "policy", "expected"),
    [
        ({"group": "g"}, None, [("t", "group", "is set by iac-ci only (a matrix's instances share it)")]),
        ({"group": "g"}, ValidationPolicy(internal=True), None),
        ({"group": "g", "matrix": {"v": ["a"]}}, None, [("t", "group", "is set by iac-ci only")]),
        ({"env": {"v": "1", "w": "2"}, "matrix": {"v": ["a"], "w": ["b"]}}, None,
         [("t", "matrix", "v, w is also set in env: a matrix value is the variable of its name")]),
        ({"matrix": {}}, None, [("t", "matrix", "Dictionary should have at least 1 item after validation, not 0")]),
        ({"matrix": {"v": ["a b"]}}, None,
         [("t", "matrix.v[0]", "String should match pattern '^[A-Za-z0-9_.-]{1,64}$'")]),
        ({"matrix": {f"v{i}": ["a"] for i in range(9)}}, None,
         [("t", "matrix", "Dictionary should have at most 8 items after validation, not more")]),
        ({"matrix": {"v": "a"}}, None, [("t", "matrix.v", "Input should be a valid list")]),
    ],
    ids=["group without matrix", "group from the engine", "group with matrix", "matrix names in env",
         "empty matrix", "bad value", "nine axes", "not a list"],
)
def test_matrix_rules(order: dict[str, Any], policy: ValidationPolicy | None,
                      expected: list[tuple[str, str, str]] | None) -> None:
    if expected is None:
        job = parse_job(one(order), policy)
        assert job.orders[0].group == "g"
    else:  # the message of each problem starts with the fragment given
        found = problems(one(order), policy)
        assert [(o, f) for o, f, _ in found] == [(o, f) for o, f, _ in expected]
        assert all(m.startswith(fragment) for (_, _, m), (_, _, fragment) in zip(found, expected, strict=True))


def test_an_instance_name_over_the_limit_is_named() -> None:
    name = "n" * 190
    found = problems(one({"name": name, "matrix": {"v": ["a" * 20]}}))
    assert (name, "matrix", f"the instance name '{name[:80]}…' is longer than 200") in found


def test_a_matrix_value_shadowing_a_parameter_is_refused_on_the_instance() -> None:
    raw = one({"matrix": {"region": ["eu"]}}) | {"params": {"region": {"default": "us"}}}
    assert problems(raw) == [("t[region=eu]", "env.region",
                              "is a parameter of the job: a parameter is the variable of its name")]


@pytest.mark.parametrize("key", ["PATH", "HOME", "AWS_REGION", "IAC_CI_REPO"])
def test_a_reserved_matrix_name_is_refused(key: str) -> None:
    found = problems(one({"matrix": {key: ["a"]}}))
    assert any(f.endswith(key) and m == "is a variable iac-ci or the shell sets itself" for _, f, m in found)


def test_a_long_order_name_can_have_a_matrix() -> None:
    name = "a" * 70
    job = parse_job(one({"name": name, "matrix": {"v": ["x"]}}))
    assert [(o.name, o.group) for o in job.orders] == [(f"{name}[v=x]", name)]


def test_an_axis_without_values_is_refused() -> None:
    found = problems(one({"matrix": {"v": []}}))
    assert any(o == "t" and f.startswith("matrix") for o, f, _ in found)


# ---- the planner runs the instances ----------------------------------------------------------------

NOW = 1_000_000.0
RULES = planner.Rules(watchdog_grace_seconds=60)


def snapshot(job: Job, status: dict[str, S]) -> RunSnapshot:
    return running_snapshot(job, status, NOW)


def step(job: Job, status: dict[str, S], results: dict[str, S]) -> planner.Decision:
    arrived = {n: Arrived(OrderResult(run_id="r1", order=n, attempt=1, status=st, exit_code=0 if st is S.SUCCEEDED
                                      else 1), NOW - 1) for n, st in results.items()}
    return planner.plan(snapshot(job, status), arrived, frozenset(), NOW, RULES)


def moves(decision: planner.Decision) -> dict[str, S]:
    return {s.transition.name: s.transition.to for s in (*decision.settle, *decision.start)}


def stopped(decision: planner.Decision) -> set[str]:
    return {s.transition.name for s in decision.settle if s.effect is Effect.STOP_WORKER}


def test_the_instances_start_together_and_the_dependent_waits() -> None:
    d = step(parse_job(matrix_job()), {}, {})
    assert [s.transition.name for s in d.start] == PY
    assert moves(d) == dict.fromkeys(PY, S.RUNNING)


@pytest.mark.parametrize("fail_fast", [True, False])
def test_the_dependent_starts_only_once_all_three_succeeded(fail_fast: bool) -> None:
    job = parse_job(matrix_job(fail_fast=fail_fast))
    two_done = {PY[0]: S.SUCCEEDED, PY[1]: S.SUCCEEDED, PY[2]: S.RUNNING}
    waiting = step(job, two_done, {})
    assert moves(waiting) == {} and waiting.finalize is None
    d = step(job, two_done, {PY[2]: S.SUCCEEDED})
    assert moves(d) == {PY[2]: S.SUCCEEDED, "report": S.RUNNING}
    assert [s.transition.name for s in d.start] == ["report"]
    # one result at a time: the dependent waits for the last one
    d = step(job, {PY[0]: S.RUNNING, PY[1]: S.RUNNING, PY[2]: S.RUNNING}, {PY[0]: S.SUCCEEDED})
    assert moves(d) == {PY[0]: S.SUCCEEDED}


def test_without_fail_fast_a_failed_instance_skips_the_dependent_and_leaves_its_siblings() -> None:
    job = parse_job(matrix_job(fail_fast=False))
    running = dict.fromkeys(PY, S.RUNNING)
    d = step(job, running, {PY[0]: S.FAILED})
    assert moves(d) == {PY[0]: S.FAILED, "report": S.SKIPPED}
    assert stopped(d) == set() and d.finalize is None
    (skip,) = [s for s in d.settle if s.transition.name == "report"]
    assert skip.transition.fields == {"reason": f"dependency '{PY[0]}' did not succeed", "finished_at": NOW}
    # the siblings finish; the run fails
    d = step(job, {PY[0]: S.FAILED, PY[1]: S.RUNNING, PY[2]: S.RUNNING, "report": S.SKIPPED},
             {PY[1]: S.SUCCEEDED, PY[2]: S.SUCCEEDED})
    assert moves(d) == {PY[1]: S.SUCCEEDED, PY[2]: S.SUCCEEDED} and d.finalize is R.FAILED


def test_with_fail_fast_a_failed_instance_cancels_running_and_skips_queued_siblings() -> None:
    job = parse_job(matrix_job())
    d = step(job, {PY[0]: S.RUNNING, PY[1]: S.RUNNING}, {PY[0]: S.FAILED})
    assert moves(d) == {PY[0]: S.FAILED, PY[1]: S.CANCELLED, PY[2]: S.SKIPPED, "report": S.SKIPPED}
    assert stopped(d) == {PY[1]}
    assert d.start == [] and d.finalize is R.FAILED
    by_name = {s.transition.name: s.transition for s in d.settle}
    reason = f"matrix instance '{PY[0]}' failed (fail_fast)"
    assert by_name[PY[1]].fields == {"reason": reason, "finished_at": NOW}
    assert by_name[PY[1]].from_status == (S.RUNNING,)
    assert by_name[PY[2]].fields == {"reason": reason, "finished_at": NOW}
    assert by_name[PY[2]].detail == {"blocked_by": PY[0]}


@pytest.mark.parametrize(
    ("failure", "fail_fast", "must_succeed", "stops"),
    [
        (S.TIMED_OUT, True, True, True),
        (S.FAILED, True, True, True),
        (S.FAILED, False, True, False),
        (S.FAILED, True, False, False),  # an advisory instance's failure does not stop the others
    ],
    ids=["timed out", "failed", "fail_fast off", "must_succeed false"],
)
def test_what_a_failed_instance_stops(failure: S, fail_fast: bool, must_succeed: bool, stops: bool) -> None:
    job = parse_job(matrix_job(fail_fast=fail_fast, must_succeed=must_succeed))
    d = step(job, {PY[0]: S.RUNNING, PY[1]: S.RUNNING}, {PY[0]: failure})
    assert (moves(d).get(PY[1]) is S.CANCELLED) is stops
    assert stopped(d) == ({PY[1]} if stops else set())


def test_a_drifted_instance_is_no_failure_for_fail_fast() -> None:
    job = parse_job(matrix_job(drift=True))
    d = step(job, {PY[0]: S.RUNNING, PY[1]: S.RUNNING}, {PY[0]: S.DRIFTED})
    assert moves(d) == {PY[0]: S.DRIFTED, PY[2]: S.RUNNING} and stopped(d) == set()


def test_fail_fast_stays_within_its_own_matrix() -> None:
    raw = copy.deepcopy(matrix_job())
    raw["orders"].append({"name": "lint", "cmds": ["x"], "matrix": {"tool": ["ruff", "mypy"]}})
    job = parse_job(raw)
    status = {n: S.RUNNING for n in [*PY, "lint[tool=ruff]", "lint[tool=mypy]"]}
    d = step(job, status, {PY[0]: S.FAILED})
    assert moves(d) == {PY[0]: S.FAILED, PY[1]: S.CANCELLED, PY[2]: S.CANCELLED, "report": S.SKIPPED}
    assert stopped(d) == {PY[1], PY[2]}
