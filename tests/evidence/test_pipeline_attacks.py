"""Attacks on the pipeline paths, run for real against the engine as ``iac-ci serve`` runs it.

- A branch push or a pull request's head cannot make schedules or ``on: after`` subscriptions:
  only the default branch's config does (they run later with the deployment's credentials).
- A job submitted through the API cannot claim to follow another run (and take its artifacts).
- A repository the policy does not chain cannot follow another repository's runs.
- A webhook cannot pose as one of iac-ci's own deliveries (a schedule's firing, a run's end).
- A secret a drift plan prints never reaches the drift issue.
"""
from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import pytest
import yaml
from support.fakes.github_server import FakeGitHub
from support.github_flow import commit_files, deliver, git, new_repo, push_payload, wait_for
from support.pipeline_world import delivery_record, done_status, finished, push, send_push
from support.pr_world import PullRequest, delivery_status, github_stack

from lambda_runtime.schema import layout
from lambda_runtime.store.codec import value

pytestmark = pytest.mark.slow

WEBHOOK_KEY = "whsec-" + secrets.token_hex(8)
TOKEN = "ghp_" + secrets.token_hex(18)
INFRA, OTHER = "acme/infra", "acme/other"
CANARY = "canary-" + secrets.token_hex(12)


def lam(name: str, *cmds: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "target": "lambda", "timeout": 60, "cmds": list(cmds), **more}


INFRA_CONFIG = {"jobs": {
    "deploy": {"on": {"push": {"branches": ["main"]}, "pull_request": {}},
               "orders": [lam("build", "mkdir -p dist && echo secret-ish > dist/x", artifacts=["dist"])]},
    "drift": {"on": {"schedule": [{"cron": "30 5 * * *"}]},
              "orders": [lam("check", 'echo "token in plan output: $TOKEN"', "exit 2", drift=True,
                             secrets=[{"ssm": "/iac-ci/drift-token", "env": "TOKEN"}])]},
}}
OTHER_CONFIG = {"jobs": {"steal": {"on": {"after": [{"repo": INFRA, "job": "deploy"}]},
                                   "orders": [lam("take", "cat dist/x", inputs=[{"from": "deploy/build",
                                                                                 "path": "dist"}])]}}}
POLICY = {"repositories": ["acme/*"], "environments": {"default": {"ssm": ["/iac-ci/"]}},
          "pipelines": {"chains": [{"from": "acme/api", "to": INFRA}]}}


@pytest.fixture(scope="module")
def world(aws, tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("pipeline-attacks")
    infra, infra_main = new_repo(root / "infra", {".iac-ci.yml": yaml.safe_dump(INFRA_CONFIG, sort_keys=False),
                                                  "README.md": "infra\n"})
    other, other_main = new_repo(root / "other", {".iac-ci.yml": yaml.safe_dump(OTHER_CONFIG, sort_keys=False)})
    fake = FakeGitHub().start()
    fake.git_repos.update({INFRA: infra, OTHER: other})
    fake.permissions.update({(INFRA, "carol"): "write"})
    stack, http = github_stack(aws, fake, POLICY, webhook_key=WEBHOOK_KEY, token=TOKEN,
                               prefix="pa" + secrets.token_hex(4))
    stack.clients.ssm.put_parameter(Name="/iac-ci/drift-token", Value=CANARY, Type="SecureString")
    w = {"stack": stack, "url": http.url, "fake": fake, "repos": {INFRA: infra, OTHER: other},
         "heads": {INFRA: infra_main, OTHER: other_main}, "webhook_key": WEBHOOK_KEY,
         "repo": infra, "main": infra_main}
    push(w, INFRA, {"README.md": "infra, reconciled\n"})
    yield w
    http.stop()
    stack.close()
    fake.stop()


def schedules(world: dict[str, Any]) -> list[str]:
    """Every schedule's message (what it would start)."""
    stack = world["stack"]
    group = stack.settings.schedule_group
    return [stack.clients.scheduler.get_schedule(Name=s["Name"], GroupName=group)["Target"]["Input"]
            for s in stack.clients.scheduler.list_schedules(GroupName=group)["Schedules"]]


def chain_item(world: dict[str, Any], repo: str, job: str) -> dict[str, Any] | None:
    stack = world["stack"]
    return stack.clients.dynamodb.get_item(TableName=stack.settings.idempotency_table, ConsistentRead=True,
                                           Key={"id": value(f"chain#{repo}#{job}")}).get("Item")


HOSTILE = {"jobs": {**INFRA_CONFIG["jobs"],
                    "every-minute": {"on": {"schedule": [{"cron": "* * * * *"}]},
                                     "orders": [lam("exfiltrate", "env")]},
                    "follow": {"on": {"after": [{"job": "deploy"}]}, "orders": [lam("x", "true")]}}}


def test_a_branch_push_makes_no_schedule_and_no_subscription(world) -> None:
    before = schedules(world)
    path = world["repos"][INFRA]
    git(path, "checkout", "-q", "-B", "attacker", "main")
    sha = commit_files(path, {".iac-ci.yml": yaml.safe_dump(HOSTILE, sort_keys=False)}, "schedule everything")
    git(path, "checkout", "-q", "main")
    pushed = send_push(world, INFRA, "refs/heads/attacker", world["heads"][INFRA], sha)
    assert pushed.outcome == "nothing"
    assert schedules(world) == before and len(before) == 1 and '"drift"' in before[0]
    assert chain_item(world, INFRA, "deploy") is None


def test_a_pull_request_head_config_makes_no_schedule_and_no_subscription(world) -> None:
    before = schedules(world)
    pr = PullRequest(world, 7, {".iac-ci.yml": yaml.safe_dump(HOSTILE, sort_keys=False)})
    delivery = pr.send("opened")
    wait_for(lambda: done_status(delivery_status(world, delivery)), what="the pull request's event")
    assert schedules(world) == before
    assert chain_item(world, INFRA, "deploy") is None


def test_an_api_job_cannot_claim_to_follow_another_run(world) -> None:
    code, body = world["stack"].submit({
        "name": "thief", "upstream": {"run_id": "0123456789abcdef", "job": "deploy", "status": "succeeded",
                                      "orders": ["build"]},
        "orders": [lam("take", "cat dist/x", inputs=[{"from": "deploy/build", "path": "dist"}])]})
    assert code == 400
    fields = {(p["field"], p["message"]) for p in body["problems"]}
    assert ("upstream", "is set by iac-ci only") in fields
    assert any(f == "inputs[0].from" and "only a run started by that job's run" in m for f, m in fields)


def test_a_repository_the_policy_does_not_chain_cannot_follow(world) -> None:
    pushed = push(world, OTHER, {"README.md": "other\n"})
    assert pushed.outcome == "invalid"
    status = wait_for(lambda: next((s for s in world["fake"].statuses if s["sha"] == pushed.sha
                                    and s["context"] == "iac-ci/pipelines"), None), what="the refusal")
    assert status["state"] == "failure" and "not allowed" in status["description"]
    assert chain_item(world, INFRA, "deploy") is None
    # and a run of acme/infra's deploy starts nothing in acme/other
    run = push(world, INFRA, {"README.md": "infra v2\n"})
    [run_id] = run.run_ids
    assert finished(world, run_id)["status"] == "succeeded"
    time.sleep(3)  # the run's end has been processed by now
    assert world["stack"].store.get_run(run_id).downstream_run_ids is None


def test_a_webhook_cannot_pose_as_an_internal_delivery(world) -> None:
    stack = world["stack"]
    run = push(world, INFRA, {"README.md": "infra v3\n"})
    [run_id] = run.run_ids
    finished(world, run_id)
    forged = push_payload(repo=INFRA, ref="refs/heads/main", before=world["heads"][INFRA],
                          after=world["heads"][INFRA], clone_url=f"file://{world['repos'][INFRA]}")
    forged.update({"iac_ci": "after", "run_id": run_id, "repo": OTHER, "job": "deploy", "status": "succeeded"})
    delivery = f"after-{uuid.uuid4().hex[:16]}"
    answer = deliver(world["url"], forged, secret=world["webhook_key"], event="push", delivery=delivery)
    assert answer.status_code == 202
    wait_for(lambda: done_status(delivery_status(world, delivery)), what="the forged delivery")
    internal = stack.clients.s3.list_objects_v2(Bucket=stack.settings.internal_bucket,
                                                Prefix=f"{layout.WEBHOOKS_PREFIX}{layout.INTERNAL_PROVIDER}/")
    keys = [o["Key"] for o in internal.get("Contents", [])]
    assert not any(delivery in k for k in keys)  # it stayed a GitHub delivery: a push, read as a push
    assert delivery_record(world, delivery)["status"] in ("nothing", "accepted")


def test_a_secret_a_drift_plan_prints_never_reaches_the_drift_issue(world) -> None:
    stack = world["stack"]
    [firing] = stack.scheduler.tick(time.time() + 86400)
    wait_for(lambda: done_status(delivery_status(world, firing.delivery)), what="the drift run")
    [run_id] = delivery_record(world, firing.delivery)["run_ids"]
    assert finished(world, run_id)["status"] == "drifted"
    issue = wait_for(lambda: next((i for (repo, _), i in world["fake"].issues.items() if repo == INFRA), None),
                     what="the drift issue")
    texts = [issue["body"], *(c["body"] for c in world["fake"].comments_on(INFRA, issue["number"]))]
    assert "token in plan output:" in issue["body"]  # the plan's output is there ...
    assert not any(CANARY in t for t in texts)  # ... without the secret
    assert not any(CANARY in r.body for r in world["fake"].requests)
