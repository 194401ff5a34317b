"""Pipeline features of one run, end to end on the embedded AWS: parameters, matrix instances and
``fail_fast``, ``run_if`` orders, drift orders. Jobs go through the API as ``iac-ci submit`` sends
them; orders run as real processes.
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.schema import layout


@pytest.fixture(scope="module")
def engine(aws):
    stack = EmbeddedStack(aws, prefix="pj" + secrets.token_hex(4), settings_overrides={"watchdog_grace_seconds": 5})
    with stack:
        yield stack


def run_job(engine: EmbeddedStack, job: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    code, body = engine.submit(job)
    assert code == 202, body
    return engine.wait(body["run_id"], timeout=timeout)


def log(engine: EmbeddedStack, run_id: str, order: str) -> str:
    body = engine.clients.s3.get_object(Bucket=engine.settings.internal_bucket, Key=layout.log_key(run_id, order))
    return str(body["Body"].read().decode())


def statuses(done: dict[str, Any]) -> dict[str, str]:
    return {n: o["status"] for n, o in done["orders"].items()}


def order(name: str, *cmds: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "target": "lambda", "timeout": 60, "cmds": list(cmds), **more}


# ---- parameters ------------------------------------------------------------------------------------------------
def test_a_parameter_with_shell_metacharacters_reaches_the_command_only_as_an_env_var(engine, tmp_path) -> None:
    planted = tmp_path / "pwned"
    value = f'$(touch {planted}); `touch {planted}` && touch {planted} "quoted" \'single\''
    done = run_job(engine, {
        "name": "params", "params": {"note": {"description": "free text"}, "dry_run": {
            "type": "boolean", "default": "true"}},
        "param_values": {"note": value},
        "orders": [order("show", 'printf "note=%s\\n" "$note"', 'echo "dry_run=$dry_run"')]})
    assert done["status"] == "succeeded", done
    text = log(engine, done["run_id"], "show")
    assert f"note={value}" in text and "dry_run=true" in text
    assert not planted.exists()  # nothing of the value was ever run
    assert done["params"] == {"note": value, "dry_run": "true"}


def test_a_bad_parameter_value_is_refused_naming_it_and_nothing_is_created(engine) -> None:
    before = engine.clients.s3.list_objects_v2(Bucket=engine.settings.internal_bucket, Prefix="jobs/").get("KeyCount")
    code, body = engine.submit({
        "name": "params", "params": {"dry_run": {"type": "boolean", "default": "true"},
                                     "region": {"allowed": ["eu-west-1", "us-east-1"]}},
        "param_values": {"dry_run": "maybe", "colour": "red"},
        "orders": [order("show", "true")]})
    assert code == 400
    found = {(p["field"], p["message"]) for p in body["problems"]}
    assert ("params.dry_run", "'maybe' is not a boolean (true or false)") in found
    assert ("params.region", "needs a value (-p region=VALUE)") in found
    assert any(f == "param_values.colour" and m.startswith("unknown parameter") for f, m in found)
    after = engine.clients.s3.list_objects_v2(Bucket=engine.settings.internal_bucket, Prefix="jobs/").get("KeyCount")
    assert after == before


# ---- matrix ----------------------------------------------------------------------------------------------------
MATRIX = {"python": ["3.10", "3.11", "3.12"]}


def matrix_job(*, fail: str | None, fail_fast: bool) -> dict[str, Any]:
    fails = f'if [ "$python" = "{fail}" ]; then exit 1; fi' if fail else "true"
    return {"name": "matrix", "orders": [
        order("tests", 'echo "python $python"', fails, "sleep 2", matrix=MATRIX, fail_fast=fail_fast),
        order("package", 'echo "after every python"', depends_on=["tests"])]}


def test_a_matrix_runs_three_instances_and_its_dependent_waits_for_all_of_them(engine) -> None:
    done = run_job(engine, matrix_job(fail=None, fail_fast=True))
    assert statuses(done) == {"tests[python=3.10]": "succeeded", "tests[python=3.11]": "succeeded",
                              "tests[python=3.12]": "succeeded", "package": "succeeded"}
    snap = engine.store.load(done["run_id"])
    last_instance = max(snap.orders[n].finished_at or 0 for n in snap.orders if n.startswith("tests["))
    assert (snap.orders["package"].started_at or 0) >= last_instance
    for version in MATRIX["python"]:
        assert f"python {version}" in log(engine, done["run_id"], f"tests[python={version}]")


def test_fail_fast_stops_the_siblings_of_a_failed_instance(engine) -> None:
    done = run_job(engine, matrix_job(fail="3.10", fail_fast=True))
    got = statuses(done)
    assert done["status"] == "failed" and got["tests[python=3.10]"] == "failed" and got["package"] == "skipped"
    # the siblings were still queued (skipped) or running (cancelled, their worker stopped): none went on
    assert {got["tests[python=3.11]"], got["tests[python=3.12]"]} <= {"skipped", "cancelled"}, got
    reasons = {done["orders"][n]["reason"] for n in ("tests[python=3.11]", "tests[python=3.12]")}
    assert reasons == {"matrix instance 'tests[python=3.10]' failed (fail_fast)"}


def test_without_fail_fast_the_siblings_finish_and_the_dependent_is_skipped(engine) -> None:
    done = run_job(engine, matrix_job(fail="3.10", fail_fast=False))
    assert statuses(done) == {"tests[python=3.10]": "failed", "tests[python=3.11]": "succeeded",
                              "tests[python=3.12]": "succeeded", "package": "skipped"}
    assert done["status"] == "failed"


# ---- run_if ----------------------------------------------------------------------------------------------------
def test_an_always_order_runs_after_a_failure_and_the_run_stays_failed(engine) -> None:
    done = run_job(engine, {"name": "always", "orders": [
        order("deploy", 'echo "deploying"', "exit 3"),
        order("smoke", "true", depends_on=["deploy"]),
        order("summary", 'echo "deploy ended; summary runs anyway"', depends_on=["smoke"], run_if="always"),
        order("on-failure", 'echo "paging"', depends_on=["deploy"], run_if="failure"),
        order("on-success", 'echo "celebrating"', depends_on=["deploy"], run_if="success")]})
    assert statuses(done) == {"deploy": "failed", "smoke": "skipped", "summary": "succeeded",
                              "on-failure": "succeeded", "on-success": "skipped"}
    assert done["status"] == "failed"
    assert "summary runs anyway" in log(engine, done["run_id"], "summary")


def test_a_failure_order_not_needed_does_not_fail_a_successful_run(engine) -> None:
    done = run_job(engine, {"name": "clean", "orders": [
        order("deploy", "true"),
        order("on-failure", 'echo "paging"', depends_on=["deploy"], run_if="failure"),
        order("summary", "true", depends_on=["deploy", "on-failure"], run_if="always")]})
    assert statuses(done) == {"deploy": "succeeded", "on-failure": "skipped", "summary": "succeeded"}
    assert done["status"] == "succeeded"
    assert done["orders"]["on-failure"]["reason"] == "not needed: run_if: failure, and every dependency succeeded"


# ---- drift -----------------------------------------------------------------------------------------------------
def test_a_drift_plan_exiting_2_makes_the_run_drifted_and_runs_its_remediation(engine) -> None:
    done = run_job(engine, {"name": "drift", "orders": [
        order("plan", 'echo "~ aws_s3_bucket.logs: tags changed"', "exit 2", drift=True),
        order("remediate", 'echo "applying the code again"', depends_on=["plan"], run_if="drifted"),
        order("not-drift", "exit 2", must_succeed=False)]})
    assert statuses(done) == {"plan": "drifted", "remediate": "succeeded", "not-drift": "failed"}
    assert done["status"] == "drifted" and done["orders"]["plan"]["exit_code"] == 2
    events = engine.wait_events(done["run_id"])
    drift = [e for e in events if e["detail-type"] == "iac-ci Drift Detected"]
    assert [(e["detail"]["order"], e["detail"]["exit_code"]) for e in drift] == [("plan", 2)]


def test_a_clean_drift_plan_skips_remediation_and_succeeds(engine, tmp_path: Path) -> None:
    done = run_job(engine, {"name": "drift", "orders": [
        order("plan", 'echo "No changes."', drift=True),
        order("remediate", "exit 9", depends_on=["plan"], run_if="drifted")]})
    assert statuses(done) == {"plan": "succeeded", "remediate": "skipped"}
    assert done["status"] == "succeeded"
