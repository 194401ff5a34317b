"""Attacks on the pull-request workflow, run for real: signed webhooks over HTTP to an ``HttpApi`` in
front of an ``EmbeddedStack``, a fake GitHub answering permissions and pull requests, a real git
repository cloned, orders run as real processes.

- a job submitted through the API that sets what only iac-ci sets (``plan_run``, to take another
  run's plan artifact; ``context``, to pose as a pull request's run) is refused, and no run exists;
- a fork's pull request is never applied, whoever asks, and nothing of it is fetched;
- a reader can neither release a pull request's lock nor cancel its run;
- order names with shell metacharacters are refused by the comment parser: nothing runs;
- a captured ``/iac-ci apply`` webhook replayed under a fresh delivery id starts nothing more;
- a job outside any pull request cannot take (or share) a lock a pull request holds, and gives its
  own locks back when it ends.
"""
from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fakes.github_server import FakeGitHub
from support.github_flow import ConnectionRecorder, comment_payload, deliver, new_repo, wait_for
from support.pr_world import PullRequest, delivery_status, github_stack, locks

from iac_ci.embedded.server import EmbeddedAws
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.schema.records import RunSnapshot
from lambda_runtime.store.codec import from_item, value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WEBHOOK_KEY = "whsec-" + secrets.token_hex(8)
TOKEN = "ghp_" + secrets.token_hex(18)
REPO = "acme/infra"
APP_LOCK = f"{REPO}:infra/app"
NET_LOCK = f"{REPO}:infra/network"
POLICY = {"repositories": ["acme/*"], "fork_pull_requests": "without_secrets",
          "environments": {"default": {"ssm": ["/iac-ci/"]}}}


def config(gate: Path) -> dict[str, Any]:
    wait = f'i=0; while [ ! -f "{gate}" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done'
    return {"name": "infra", "orders": [
        {"name": "plan-app", "target": "lambda", "dir": "infra/app",
         "cmds": ['echo "app plan of $IAC_CI_HEAD_SHA for PR $IAC_CI_PR_NUMBER" > tfplan'], "artifacts": ["tfplan"]},
        {"name": "apply-app", "target": "lambda", "dir": "infra/app", "command": "apply", "depends_on": ["plan-app"],
         "inputs": [{"from": "plan-app", "path": "tfplan"}], "cmds": ['echo "applying: $(cat tfplan)"']},
        {"name": "plan-network", "target": "lambda", "dir": "infra/network", "cmds": [wait, "echo network planned"]},
    ]}


@pytest.fixture(scope="module")
def world(aws: EmbeddedAws, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("prattacks")
    gate = root / "gate"
    repo, main_sha = new_repo(root / "infra", {
        ".iac-ci.yml": yaml.safe_dump(config(gate), sort_keys=False),
        "infra/app/main.tf": 'resource "aws_s3_bucket" "app" {}\n',
        "infra/network/main.tf": 'resource "aws_vpc" "this" {}\n'})
    fake = FakeGitHub().start()
    fake.git_repos[REPO] = repo
    fake.permissions.update({(REPO, "carol"): "write", (REPO, "rita"): "read"})
    stack, http = github_stack(aws, fake, POLICY, webhook_key=WEBHOOK_KEY, token=TOKEN,
                               prefix="pa" + secrets.token_hex(4))
    yield {"stack": stack, "url": http.url, "fake": fake, "repo": repo, "main": main_sha, "gate": gate,
           "webhook_key": WEBHOOK_KEY}
    gate.touch()  # nothing waits on it any more
    http.stop()
    stack.close()
    fake.stop()


def run_ids(world: dict[str, Any]) -> set[str]:
    """Every run the engine has recorded (the run items of the orders table)."""
    stack: EmbeddedStack = world["stack"]
    out: set[str] = set()
    kwargs: dict[str, Any] = {"TableName": stack.settings.orders_table, "FilterExpression": "sk = :run",
                              "ExpressionAttributeValues": {":run": value("#run")}}
    while True:
        page = stack.clients.dynamodb.scan(**kwargs)
        out |= {str(from_item(i)["run_id"]) for i in page["Items"]}
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.fixture(scope="module")
def planned(world: dict[str, Any]) -> Iterator[tuple[PullRequest, RunSnapshot]]:
    """Pull request #1, planned: its run has the plan artifact, and the PR holds the app's lock."""
    pr = PullRequest(world, 1, {"infra/app/main.tf": 'resource "aws_s3_bucket" "app" { bucket = "v2" }\n'})
    pr.send("opened")
    plan = pr.finished(pr.first_run())
    assert plan.orders["plan-app"].status.value == "succeeded" and plan.orders["plan-app"].has_artifacts
    assert world["fake"].requests_to(rf"/contents/.*ref={pr.sha}"), "how a config read shows in the fake's log"
    held = locks(world).get(APP_LOCK)
    assert held is not None and held.holder.pr_number == 1
    yield pr, plan
    pr.send("closed", merged=False)


# ---- (1) what only iac-ci sets ---------------------------------------------------------------------------------
def test_an_api_job_cannot_take_another_runs_plan_artifact(
        world: dict[str, Any], planned: tuple[PullRequest, RunSnapshot]) -> None:
    pr, plan = planned
    assert plan.run is not None
    stack: EmbeddedStack = world["stack"]
    before = run_ids(world)
    steal = {"name": "steal", "plan_run": {"run_id": plan.run.run_id, "commit": pr.sha, "orders": ["plan-app"]},
             "orders": [{"name": "exfiltrate", "target": "lambda", "command": "apply",
                         "inputs": [{"from": "plan-app", "path": "tfplan"}], "cmds": ["cat tfplan"]}]}
    code, body = stack.submit(steal)
    assert code == 400, body
    fields = {p["field"] for p in body["problems"]}
    assert "plan_run" in fields, body
    assert any(p["field"] == "plan_run" and p["message"] == "is set by iac-ci only" for p in body["problems"])
    assert "run_id" not in body
    assert run_ids(world) == before, "no run was created"


def test_an_api_job_cannot_pose_as_a_pull_requests_run(world: dict[str, Any]) -> None:
    stack: EmbeddedStack = world["stack"]
    before = run_ids(world)
    spoof = {"name": "spoof", "context": {"repo": REPO, "pr_number": 1, "event": "comment", "command": "apply"},
             "orders": [{"name": "deploy", "target": "lambda", "cmds": ['echo "PR $IAC_CI_PR_NUMBER"']}]}
    code, body = stack.submit(spoof)
    assert code == 400, body
    assert [p for p in body["problems"] if p["field"] == "context"] == [
        {"order": None, "field": "context", "message": "is set by iac-ci only"}]
    yaml_code, yaml_body = stack.submit(yaml.safe_dump(spoof).encode(), content_type="application/yaml")
    assert yaml_code == 400 and any(p["field"] == "context" for p in yaml_body["problems"]), yaml_body
    assert run_ids(world) == before


# ---- (2) a fork is never applied ------------------------------------------------------------------------------
def test_a_fork_pull_request_is_not_applied_and_nothing_of_it_is_fetched(world: dict[str, Any]) -> None:
    fake: FakeGitHub = world["fake"]
    recorder = ConnectionRecorder()
    try:
        fork = PullRequest(world, 2, {"infra/app/main.tf": "# evil\n"}, head_repo="evil/infra", author="mallory",
                  association="CONTRIBUTOR", clone_url=f"https://127.0.0.1:{recorder.port}/evil/infra.git")
        opened = fork.send("opened")
        wait_for(lambda: delivery_status(world, opened) == "untrusted", what="the fork's delivery processed")
        answer = fork.reply_to(fork.comment("/iac-ci apply"))  # carol has write permission
        assert "an apply never runs for a pull request from a fork" in answer
        named = fork.reply_to(fork.comment("/iac-ci apply apply-app -d infra/app"))
        assert "an apply never runs" in named
        assert fork.runs() == []
        assert recorder.connections == 0, "the fork's repository was never contacted"
        assert not fake.requests_to(rf"/contents/.*ref={fork.sha}"), "the fork's config was never read"
    finally:
        recorder.stop()


# ---- (3) a reader cannot unlock or cancel ---------------------------------------------------------------------
def test_a_reader_can_neither_unlock_nor_cancel(world: dict[str, Any]) -> None:
    stack: EmbeddedStack = world["stack"]
    pr = PullRequest(world, 3, {"infra/network/main.tf": "# network v2\n"})
    pr.send("opened")
    run_id = pr.first_run()
    wait_for(lambda: (lambda o: o is not None and o.status.value == "running")(
        stack.store.load(run_id).orders.get("plan-network")), what="the plan running (its lock taken)")
    held = locks(world).get(NET_LOCK)
    assert held is not None and held.holder.pr_number == 3

    cancel = pr.reply_to(pr.comment("/iac-ci cancel", login="rita"))
    assert "`/iac-ci cancel` needs write permission" in cancel and "`read`" in cancel
    unlock = pr.reply_to(pr.comment("/iac-ci unlock", login="rita"))
    assert "`/iac-ci unlock` needs write permission" in unlock and "`read`" in unlock
    snap = stack.store.load(run_id)
    assert snap.run is not None and not snap.run.cancel_requested and not snap.run.finalized
    assert locks(world).get(NET_LOCK) == held, "the lock stays, unchanged"

    world["gate"].touch()
    done = pr.finished(run_id)
    assert done.run is not None and done.run.status.value == "succeeded" and not done.run.cancel_requested
    assert done.orders["plan-network"].status.value == "succeeded"
    assert locks(world).get(NET_LOCK).holder.pr_number == 3  # type: ignore[union-attr]
    assert not any(e.get("event_type") == "lock_released" for e in locks(world).history(NET_LOCK))
    pr.send("closed", merged=False)
    wait_for(lambda: locks(world).get(NET_LOCK) is None, what="closing releases the lock")


# ---- (4) shell metacharacters in a command ---------------------------------------------------------------------
def test_order_names_with_shell_metacharacters_are_refused_by_the_parser(world: dict[str, Any]) -> None:
    pr = PullRequest(world, 4, {"infra/app/other.tf": "# other\n"})
    canary = Path(f"/tmp/iac-ci-pwned-{secrets.token_hex(6)}")
    bodies = {
        "/iac-ci plan `id`": "`'id'` is not an order name",
        f"/iac-ci plan $(touch {canary})": "`$(touch` is not an order name",
        "/iac-ci plan plan-app;rm -rf /": "`plan-app;rm` is not an order name",
        f"/iac-ci apply apply-app|touch {canary}": "`apply-app|touch` is not an order name",
        "/iac-ci plan -p plan-app&&id": "`plan-app&&id` is not an order name",
        f"/iac-ci plan -d infra/app;touch{canary}": "is not a directory of the repository",
        "/iac-ci plan ${IFS}id": "`${IFS}id` is not an order name",
    }
    docs = {body: pr.comment(body) for body in bodies}
    for body, expected in bodies.items():
        answer = pr.reply_to(docs[body])
        assert expected in answer, (body, answer)
    fake: FakeGitHub = world["fake"]
    confused = {r["comment_id"] for r in list(fake.reactions) if r["content"] == "confused"}
    assert {d["comment"]["id"] for d in docs.values()} <= confused
    assert pr.runs() == [] and not canary.exists()


# ---- (5) a replayed apply ----------------------------------------------------------------------------------------
def test_a_replayed_apply_webhook_starts_one_apply(
        world: dict[str, Any], planned: tuple[PullRequest, RunSnapshot]) -> None:
    pr, _ = planned
    doc = comment_payload(number=pr.number, body="/iac-ci apply", login="carol")
    raw = json.dumps(doc).encode()
    first = deliver(world["url"], raw, secret=WEBHOOK_KEY, event="issue_comment", delivery=str(uuid.uuid4()))
    assert first.status_code == 202, first.text
    replay = deliver(world["url"], raw, secret=WEBHOOK_KEY, event="issue_comment", delivery=str(uuid.uuid4()))
    assert replay.status_code == 200 and replay.json()["duplicate"] is True, replay.text
    assert "started apply run" in pr.reply_to(doc)
    applied = pr.finished(pr.first_run("apply"))
    assert applied.orders["apply-app"].status.value == "succeeded"
    late = deliver(world["url"], raw, secret=WEBHOOK_KEY, event="issue_comment", delivery=str(uuid.uuid4()))
    assert late.status_code == 200 and late.json()["duplicate"] is True, late.text
    time.sleep(2)  # the packaging pump would have picked up a queued replay by now
    assert len(pr.runs("apply")) == 1


# ---- (6) locks outside any pull request ---------------------------------------------------------------------------
def test_a_plain_job_cannot_take_a_pull_requests_lock_and_gives_its_own_back(
        world: dict[str, Any], planned: tuple[PullRequest, RunSnapshot]) -> None:
    stack: EmbeddedStack = world["stack"]
    held = locks(world).get(APP_LOCK)
    assert held is not None and held.holder.pr_number == 1
    own = f"plain-{secrets.token_hex(4)}"
    job = {"name": "sneaky", "repo": REPO, "pr_number": 1, "source": {"path": str(world["repo"])}, "orders": [
        {"name": "named", "target": "lambda", "lock": APP_LOCK, "cmds": ["echo took it"]},
        {"name": "posing", "target": "lambda", "dir": "infra/app", "cmds": ["echo took it too"]},  # <repo>:<dir>
        {"name": "after", "target": "lambda", "depends_on": ["named"], "cmds": ["echo after"]},
        {"name": "own", "target": "lambda", "lock": own, "cmds": ["echo own lock"]},
    ]}
    code, body = stack.submit(job)
    assert code == 202, body
    snap = planned[0].finished(body["run_id"])
    status = {n: o.status.value for n, o in snap.orders.items()}
    assert status == {"named": "locked", "posing": "locked", "after": "skipped", "own": "succeeded"}
    for name in ("named", "posing"):
        reason = snap.orders[name].reason or ""
        assert "acme/infra#1" in reason and "https://github.com/acme/infra/pull/1" in reason, reason
    now = locks(world).get(APP_LOCK)
    assert now is not None and now.holder.key == held.holder.key and now.epoch == held.epoch
    # released once the run is final (its done object comes a moment before)
    wait_for(lambda: locks(world).get(own) is None, timeout=30, what="a plain run's lock released when it ends")
    events = [e["event_type"] for e in locks(world).history(own)]
    assert events == ["lock_released", "lock_acquired"]
    fake: FakeGitHub = world["fake"]
    assert not any(body["run_id"] in c["body"] for c in fake.comments_on(REPO, 1)), "nothing posted on the PR"
