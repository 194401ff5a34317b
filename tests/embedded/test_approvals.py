"""Environments with rules, end to end on the embedded AWS: orders wait in ``awaiting_approval``
with nothing minted, N distinct reviewers release them, a rejection or the job timeout ends them
and skips their dependents, a wait timer holds them, and credentials are created at dispatch."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.approvals.logic import Approvals
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.policy.model import load_policy
from lambda_runtime.schema.status import OrderStatus

pytestmark = pytest.mark.slow

ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:iam::123456789012:user/bob"
CAROL_ROLE = "arn:aws:sts::123456789012:assumed-role/Release/carol-session"
DEPLOY_ROLE = "arn:aws:iam::123456789012:role/deploy"
POLICY = {
    "environments": {
        "default": {"ssm": ["/iac-ci/dev/"]},
        "prod": {
            "secrets": ["iac-ci/prod/"],
            "roles": [DEPLOY_ROLE],
            "reviewers": [ALICE, BOB, "arn:aws:iam::123456789012:role/Release"],
            "required_approvals": 2,
            "prevent_self_review": True,
        },
        "staging": {"ssm": ["/iac-ci/dev/"], "wait_seconds": 4},
    }
}


@pytest.fixture()
def gated(aws):
    policy = load_policy(POLICY)
    stack = EmbeddedStack(aws, prefix="g" + secrets.token_hex(4),
                          settings_overrides={"watchdog_grace_seconds": 3, "policy": policy.to_json()})
    with stack:
        yield stack
    assert not stack.pump_errors


def approvals(stack: EmbeddedStack) -> Approvals:
    return Approvals(stack.clients, stack.store, stack.settings.internal_bucket, stack.settings.deployment_policy)


def iam(arn: str) -> Reviewer:
    return Reviewer(identity=arn, kind="iam", via="api")


def submit(stack: EmbeddedStack, job: dict[str, Any]) -> str:
    code, body = stack.submit({"username": "alice", **job})  # ALICE's user name
    assert code == 202, body
    return str(body["run_id"])


def wait_status(stack: EmbeddedStack, run_id: str, order: str, status: OrderStatus, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = stack.store.load(run_id)
        if order in snap.orders and snap.orders[order].status is status:
            return
        time.sleep(0.2)
    raise AssertionError(f"{order} never became {status.value}: {stack.store.load(run_id).orders.get(order)}")


def everything_stored(stack: EmbeddedStack) -> str:
    """Every object of every bucket and every item of every table of the stack, as one text."""
    s3, ddb, parts = stack.clients.s3, stack.clients.dynamodb, []
    s = stack.settings
    for bucket in (s.internal_bucket, s.done_bucket, s.state_bucket):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                parts.append(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode("latin-1"))
    for table in (s.orders_table, s.events_table, s.locks_table, s.idempotency_table):
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            parts.append(json.dumps(page["Items"]))
    return "\n".join(parts)


def prod_job(canary_id: str) -> dict[str, Any]:
    return {
        "name": "release",
        "orders": [
            {"name": "plan", "target": "lambda", "cmds": ["echo planned"]},
            {"name": "apply", "target": "lambda", "environment": "prod", "depends_on": ["plan"],
             "secrets": [{"env": "DEPLOY_KEY", "secret": canary_id}], "aws_role": DEPLOY_ROLE,
             "cmds": ['test -n "$DEPLOY_KEY"', 'test -n "$AWS_SESSION_TOKEN"', 'echo "key=$DEPLOY_KEY"']},
            {"name": "smoke", "target": "lambda", "depends_on": ["apply"], "cmds": ["echo smoke"]},
        ],
    }


def test_two_distinct_reviewers_release_an_order_and_nothing_exists_before(gated) -> None:
    canary = "canary-" + secrets.token_hex(12)
    gated.clients.secrets.create_secret(Name="iac-ci/prod/deploy-key", SecretString=canary)
    assume_calls: list[float] = []
    durations: list[int] = []

    def assumed(params: dict[str, Any], **_: Any) -> None:
        assume_calls.append(time.time())
        durations.append(int(params["body"]["DurationSeconds"]))

    gated.clients.sts.meta.events.register("before-call.sts.AssumeRole", assumed)
    run_id = submit(gated, prod_job("iac-ci/prod/deploy-key"))
    wait_status(gated, run_id, "apply", OrderStatus.AWAITING_APPROVAL)
    time.sleep(1)  # give a wrong engine the time to mint anyway
    assert canary not in everything_stored(gated)
    assert assume_calls == [] and gated.store.load(run_id).orders["smoke"].status is OrderStatus.QUEUED
    svc = approvals(gated)

    selfie = svc.decide(run_id, "approve", iam(ALICE), ["apply"])  # ALICE started the run
    assert selfie.status == 403 and not selfie.recorded and "prevent_self_review" in selfie.problems[0]
    stranger = svc.decide(run_id, "approve", iam("arn:aws:iam::123456789012:user/mallory"))
    assert stranger.status == 403 and "is not a reviewer of environment 'prod'" in stranger.problems[0]
    first = svc.decide(run_id, "approve", iam(BOB), ["apply"])
    assert first.recorded == ["apply"], first
    again = svc.decide(run_id, "approve", iam(BOB), ["apply"])
    assert again.status == 409 and "already approved by" in again.problems[0]
    time.sleep(1)
    assert gated.store.load(run_id).orders["apply"].status is OrderStatus.AWAITING_APPROVAL  # 1 of 2
    assert assume_calls == []
    released_at = time.time()
    second = svc.decide(run_id, "approve", iam(CAROL_ROLE), ["apply"])  # matches the role entry
    assert second.recorded == ["apply"], second

    done = gated.wait(run_id, timeout=60)
    assert done["status"] == "succeeded", done
    assert {n: o["status"] for n, o in done["orders"].items()} == {
        "plan": "succeeded", "apply": "succeeded", "smoke": "succeeded"}
    assert "key=***" in done["orders"]["apply"]["log_tail"] and canary not in json.dumps(done)
    assert done["orders"]["apply"]["approval"]["approved_by"] == [BOB, CAROL_ROLE]
    assert len(assume_calls) == 1 and assume_calls[0] >= released_at  # minted at dispatch, not before
    # valid for the order's whole timeout from its dispatch (600 s + grace), however long it waited
    assert durations[0] >= 600 + gated.settings.watchdog_grace_seconds
    events = [e for e in gated.store.events(run_id) if e["event_type"].startswith("approval")]
    kinds = sorted(e["event_type"] for e in events)
    assert kinds == ["approval_granted", "approval_granted", "approval_refused", "approval_refused",
                     "approval_refused"], kinds
    granted = [e["detail"] for e in events if e["event_type"] == "approval_granted"]
    assert {g["by"] for g in granted} == {BOB, CAROL_ROLE} and all(g["via"] == "api" for g in granted)
    assert any(g["rule"] == "reviewers: arn:aws:iam::123456789012:role/Release" for g in granted)
    apply_trace = gated.store.load(run_id).orders["apply"].trace  # found from the order's logs too
    assert apply_trace and [e.get("order_trace") for e in events if e["event_type"] == "approval_granted"] == [
        apply_trace, apply_trace]
    # the minted credentials are gone once the order is final
    assert canary not in everything_stored(gated)


def test_a_rejection_skips_the_dependents_and_fails_the_run(gated) -> None:
    gated.clients.secrets.create_secret(Name="iac-ci/prod/key2", SecretString="v-" + secrets.token_hex(8))
    run_id = submit(gated, prod_job("iac-ci/prod/key2"))
    wait_status(gated, run_id, "apply", OrderStatus.AWAITING_APPROVAL)
    out = approvals(gated).decide(run_id, "reject", iam(BOB), reason="not during the freeze")
    assert out.recorded == ["apply"]
    done = gated.wait(run_id, timeout=60)
    assert done["status"] == "failed"
    assert {n: o["status"] for n, o in done["orders"].items()} == {
        "plan": "succeeded", "apply": "rejected", "smoke": "skipped"}
    assert "rejected by " + BOB in done["orders"]["apply"]["reason"]
    assert "not during the freeze" in done["orders"]["apply"]["reason"]
    (rejected,) = [e for e in gated.store.events(run_id) if e["event_type"] == "approval_rejected"]
    apply_trace = gated.store.load(run_id).orders["apply"].trace
    assert apply_trace and rejected.get("order_trace") == apply_trace
    late = approvals(gated).decide(run_id, "approve", iam(ALICE.replace("alice", "bob")), ["apply"])
    assert late.status == 409 and not late.recorded


def test_the_job_timeout_ends_a_waiting_order(gated) -> None:
    gated.clients.secrets.create_secret(Name="iac-ci/prod/key3", SecretString="v-" + secrets.token_hex(8))
    run_id = submit(gated, {**prod_job("iac-ci/prod/key3"), "timeout": 8})
    done = gated.wait(run_id, timeout=60)
    assert done["status"] == "timed_out"
    assert {n: o["status"] for n, o in done["orders"].items()} == {
        "plan": "succeeded", "apply": "timed_out", "smoke": "cancelled"}


def test_a_wait_timer_holds_an_order_without_reviewers(gated) -> None:
    run_id = submit(gated, {"name": "soak", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["true"]},
        {"name": "b", "target": "lambda", "environment": "staging", "depends_on": ["a"], "cmds": ["true"]},
    ]})
    wait_status(gated, run_id, "b", OrderStatus.AWAITING_APPROVAL)
    waited_from = gated.store.load(run_id).orders["b"].awaiting_since
    done = gated.wait(run_id, timeout=60)
    assert done["status"] == "succeeded"
    dispatched = gated.store.load(run_id).orders["b"].dispatched_at
    assert waited_from is not None and dispatched is not None and dispatched - waited_from >= 4


def test_a_secret_outside_the_environment_is_refused_naming_the_order(gated) -> None:
    code, body = gated.submit({"name": "sneaky", "orders": [
        {"name": "plan", "cmds": ["env"], "secrets": [{"env": "K", "secret": "iac-ci/prod/deploy-key"}]},
        {"name": "ship", "cmds": ["true"], "environment": "prod", "aws_role": "arn:aws:iam::123456789012:role/admin"},
        {"name": "nowhere", "cmds": ["true"], "environment": "qa"},
    ]})
    assert code == 400, body
    text = json.dumps(body)
    assert "order 'plan'" in text or '"order": "plan"' in text
    assert "is not granted by environment 'default'" in text
    assert "role 'arn:aws:iam::123456789012:role/admin' is not granted by environment 'prod'" in text
    assert "unknown environment 'qa'" in text
    assert gated.store.load_items  # the store exists; nothing was accepted:
    assert gated.clients.s3.list_objects_v2(Bucket=gated.settings.internal_bucket).get("KeyCount", 0) == 0


# ---- the approve and reject routes: IAM principal on AWS, a named approver only behind iac-ci serve --


def waiting_run(stack: EmbeddedStack, name: str) -> str:
    stack.clients.secrets.create_secret(Name=f"iac-ci/prod/{name}", SecretString="v-" + secrets.token_hex(8))
    run_id = submit(stack, prod_job(f"iac-ci/prod/{name}"))
    wait_status(stack, run_id, "apply", OrderStatus.AWAITING_APPROVAL)
    return run_id


def iam_event(run_id: str, verdict: str, body: dict[str, Any], user_arn: str | None) -> dict[str, Any]:
    """What API Gateway hands the intake after it verified a SigV4 signature (IAM authorization)."""
    from iac_ci.embedded.apigw import proxy_event

    event = proxy_event("POST", f"/runs/{run_id}/{verdict}", json.dumps(body).encode(),
                        {"Content-Type": "application/json"})
    if user_arn is not None:
        event["requestContext"]["identity"]["userArn"] = user_arn
    return event


def test_on_aws_the_reviewer_is_the_callers_iam_principal_and_nothing_else(gated) -> None:
    from lambda_runtime.intake.handler import build

    run_id = waiting_run(gated, "route-key")
    deployed = build(gated.settings.model_copy(update={"embedded": False}), gated.clients)
    # a body naming an approver is no identity on AWS, signed or not
    claimed = deployed.handle(iam_event(run_id, "approve", {"approver": BOB}, None), None)
    assert claimed["statusCode"] == 403 and "SigV4" in claimed["body"]
    assert gated.store.load(run_id).orders["apply"].approvals == ()
    bad = deployed.handle(iam_event(run_id, "approve", {"orders": "apply", "typo": 1}, BOB), None)
    assert bad["statusCode"] == 400 and "orders: must be a list" in bad["body"] and "typo: unknown" in bad["body"]
    first = deployed.handle(iam_event(run_id, "approve", {"orders": ["apply"]}, BOB), None)
    assert first["statusCode"] == 200, first
    second = deployed.handle(iam_event(run_id, "approve", {}, CAROL_ROLE), None)
    assert second["statusCode"] == 200 and json.loads(second["body"])["recorded"] == ["apply"]
    assert gated.wait(run_id, timeout=60)["status"] == "succeeded"


def test_iac_ci_approve_against_serve_releases_and_refuses_as_it_should(gated, tmp_path) -> None:
    import subprocess
    import sys

    from iac_ci.embedded.http_api import HttpApi

    run_id = waiting_run(gated, "cli-key")
    with HttpApi(gated.api) as http:
        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            exe = str(Path(sys.executable).with_name("iac-ci"))
            return subprocess.run([exe, *args, "--url", http.url, "--secret",
                                   gated.webhook_secret], capture_output=True, text=True, timeout=60)

        selfie = cli("approve", run_id, "apply", "--approver", "alice")
        assert selfie.returncode == 1 and "prevent_self_review" in selfie.stderr
        assert cli("approve", run_id, "--approver", BOB).returncode == 0
        unknown = cli("approve", run_id, "nope", "--approver", CAROL_ROLE)
        assert unknown.returncode == 2 and "order 'nope' does not exist" in unknown.stderr
        ok = cli("approve", run_id, "apply", "--approver", CAROL_ROLE)
        assert ok.returncode == 0 and f"approved apply as {CAROL_ROLE}" in ok.stderr
    assert gated.wait(run_id, timeout=60)["status"] == "succeeded"
