"""The pull-request workflow end to end: plan on open, apply on command with the plan's artifact,
locks across pull requests, the PR's life (push, close, merge, draft) and GitHub's failures.

Signed webhooks (built from the ``@octokit/webhooks-examples`` fixtures) go over real HTTP to the
engine's API (``HttpApi`` in front of an ``EmbeddedStack``, as ``iac-ci serve`` runs it); a fake
GitHub records every call and answers the permission, review, files and pull-request queries; a
real git repository is cloned; orders run as real processes.
"""
from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fakes.github_server import FakeGitHub
from support.github_flow import (
    check_run_rerequested_payload,
    commit_files,
    deliver,
    git,
    merge_group_payload,
    new_repo,
    wait_for,
)
from support.pr_world import PullRequest, delivery_status, github_stack, locks, log_of, statuses

from lambda_runtime.store.codec import value

pytestmark = pytest.mark.slow

WEBHOOK_KEY = "whsec-" + secrets.token_hex(8)
TOKEN = "ghp_" + secrets.token_hex(18)
REPO = "acme/infra"
CONFIG = {
    "name": "infra",
    "orders": [
        {"name": "plan-network", "target": "lambda", "dir": "infra/network",
         "when": {"paths": ["infra/network/**", "modules/**"]},
         "cmds": ['echo "network plan for PR $IAC_CI_PR_NUMBER ($IAC_CI_EVENT/$IAC_CI_COMMAND)" > tfplan',
                  'echo "changed: $(tr "\\n" " " < "$IAC_CI_CHANGED_FILES")"'],
         "artifacts": ["tfplan"]},
        {"name": "plan-app", "target": "lambda", "dir": "infra/app",
         "cmds": ["if [ -f slow ]; then sleep 60; fi", 'echo "app plan of $IAC_CI_HEAD_SHA" > tfplan'],
         "artifacts": ["tfplan"]},
        {"name": "apply-app", "target": "lambda", "dir": "infra/app", "command": "apply",
         "depends_on": ["plan-app"], "inputs": [{"from": "plan-app", "path": "tfplan"}],
         "apply_requirements": ["approved"],
         "cmds": ['echo "applying: $(cat tfplan) as $IAC_CI_COMMAND"']},
        {"name": "apply-network", "target": "lambda", "dir": "infra/network", "command": "apply",
         "apply_on": "merge", "depends_on": ["plan-network"], "inputs": [{"from": "plan-network", "path": "tfplan"}],
         "cmds": ['echo "merged apply: $(cat tfplan) on $IAC_CI_BASE_REF"']},
    ],
}
POLICY = {"repositories": ["acme/*"], "environments": {"default": {"ssm": ["/iac-ci/"]}}}


@pytest.fixture(scope="module")
def world(aws, tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("prflow")
    repo, main_sha = new_repo(root / "infra", {
        ".iac-ci.yml": yaml.safe_dump(CONFIG, sort_keys=False),
        "infra/network/main.tf": 'module "vpc" { source = "../../modules/vpc" }\n',
        "infra/app/main.tf": 'resource "aws_s3_bucket" "app" {}\n',
        "modules/vpc/main.tf": 'resource "aws_vpc" "this" {}\n'})
    fake = FakeGitHub().start()
    fake.git_repos[REPO] = repo
    fake.permissions.update({(REPO, "carol"): "write", (REPO, "rita"): "read"})
    stack, http = github_stack(aws, fake, POLICY, webhook_key=WEBHOOK_KEY, token=TOKEN,
                               prefix="pw" + secrets.token_hex(4))
    yield {"stack": stack, "url": http.url, "fake": fake, "repo": repo, "main": main_sha,
           "webhook_key": WEBHOOK_KEY}
    http.stop()
    stack.close()
    fake.stop()


# ---- plan, then apply ----------------------------------------------------------------------------------------
def test_open_plans_only_what_changed_then_apply_uses_the_plans_artifact(world) -> None:
    pr = PullRequest(world, 1, {"infra/app/main.tf": 'resource "aws_s3_bucket" "app" { bucket = "v2" }\n'})
    pr.send("opened")
    plan = pr.finished(pr.new_run(0))
    assert sorted(plan.orders) == ["plan-app"]  # network's files did not change: not created at all
    assert plan.orders["plan-app"].status.value == "succeeded"
    plan_status = wait_for(lambda: next((s for s in statuses(world, pr.sha) if s["context"] == "iac-ci/infra"
                                         and s["state"] == "success"), None), what="the plan status")
    assert plan_status["description"]

    reader = pr.comment("/iac-ci apply", login="rita")
    answer = pr.reply_to(reader)
    assert "needs write permission" in answer and "`read`" in answer
    assert [r for r in pr.runs() if r.command == "apply"] == []
    assert any(r.path.endswith(f"/issues/comments/{reader['comment']['id']}/reactions")
               for r in world["fake"].requests), "every command is acknowledged with a reaction"

    # `approved` is unmet: the apply order is blocked, nothing of it ran
    blocked_cmd = pr.comment("/iac-ci apply")
    assert "started apply run" in pr.reply_to(blocked_cmd)
    blocked = pr.finished(pr.new_run(0, "apply"))
    order = blocked.orders["apply-app"]
    assert order.status.value == "blocked" and "`approved`" in (order.reason or "")
    assert order.dispatched_at is None and order.exit_code is None
    comment = wait_for(lambda: next((c["body"] for c in world["fake"].comments_on(REPO, 1)
                                     if blocked.run and blocked.run.run_id in c["body"].split("\n")[0]
                                     and "**failed**" in c["body"]), None), what="the blocked apply's comment")
    assert "approved" in comment

    # an approving review on the head commit meets it; the apply takes the plan run's tfplan
    world["fake"].reviews[(REPO, 1)] = [{"id": 1, "user": {"login": "bob"}, "state": "APPROVED",
                                         "commit_id": pr.sha, "submitted_at": "2026-12-01T00:00:00Z"}]
    before = len(pr.runs())
    pr.reply_to(pr.comment("/iac-ci apply"))
    applied = pr.finished(pr.new_run(before, "apply"))
    assert applied.orders["apply-app"].status.value == "succeeded"
    assert f"applying: app plan of {pr.sha} as apply" in log_of(world, applied.run.run_id, "apply-app")
    wait_for(lambda: any(s["context"] == "iac-ci/infra/apply" and s["state"] == "success"
                         for s in statuses(world, pr.sha)), what="the apply status")

    # a second apply at the same commit does not apply again
    again = pr.comment("/iac-ci apply")
    assert "applied already" in pr.reply_to(again)

    # a push after the plan: apply is refused as stale (before any re-plan)
    pr.push({"infra/app/extra.tf": "# more\n"})
    stale = pr.comment("/iac-ci apply")
    text = pr.reply_to(stale)
    assert "stale" in text and pr.sha[:12] in text
    pr.send("closed", merged=False)
    wait_for(lambda: locks(world).get(f"{REPO}:infra/app") is None, what="close releases the lock")


def test_unknown_command_gets_the_help_and_a_shell_injection_is_only_text(world) -> None:
    pr = PullRequest(world, 2, {"README.md": "docs only\n"})
    answer = pr.reply_to(pr.comment("/iac-ci deploy now"))
    assert "unknown command" in answer and "/iac-ci plan" in answer and "/iac-ci unlock" in answer
    evil = pr.reply_to(pr.comment("/iac-ci plan $(touch /tmp/pwned-iac-ci) ; rm -rf /"))
    assert "not an order name" in evil and not Path("/tmp/pwned-iac-ci").exists()


# ---- locks -----------------------------------------------------------------------------------------------------
def test_a_second_pr_on_the_same_dir_is_locked_until_the_first_merges(world) -> None:
    first = PullRequest(world, 10, {"infra/network/main.tf": "# network v2\n"})
    first.send("opened")
    plan = first.finished(first.new_run(0))
    assert plan.orders["plan-network"].status.value == "succeeded"
    held = locks(world).get(f"{REPO}:infra/network")
    assert held is not None and held.holder.pr_number == 10

    second = PullRequest(world, 11, {"modules/vpc/main.tf": "# vpc v2\n"})  # network's `when.paths` include modules/**
    second.send("opened")
    locked = second.finished(second.new_run(0))
    order = locked.orders["plan-network"]
    assert order.status.value == "locked" and "acme/infra#10" in (order.reason or "")
    assert "https://github.com/acme/infra/pull/10" in (order.reason or "") and "until" in (order.reason or "")
    body = wait_for(lambda: next((c["body"] for c in world["fake"].comments_on(REPO, 11)
                                  if "acme/infra#10" in c["body"]), None), what="the locked comment")
    assert "[acme/infra#10](https://github.com/acme/infra/pull/10)" in body

    # merging the first releases its lock once its apply_on: merge order ran on the merge commit
    git(world["repo"], "merge", "-q", "--no-ff", "-m", "merge #10", first.branch)
    merge_sha = git(world["repo"], "rev-parse", "HEAD")
    world["main"] = merge_sha
    first.send("closed", merged=True, merge_sha=merge_sha)
    merged = first.finished(first.new_run(1, "apply"))
    assert sorted(merged.orders) == ["apply-network", "plan-network"]  # its plan runs again on the merge commit
    assert merged.run is not None and merged.run.commit == merge_sha
    assert {n: o.status.value for n, o in merged.orders.items()} == {"plan-network": "succeeded",
                                                                     "apply-network": "succeeded"}
    assert "merged apply: network plan for PR 10" in log_of(world, merged.run.run_id, "apply-network")
    wait_for(lambda: locks(world).get(f"{REPO}:infra/network") is None, what="the lock released after the merge")

    before = len(second.runs())
    second.reply_to(second.comment("/iac-ci plan"))
    replanned = second.finished(second.new_run(before))
    assert replanned.orders["plan-network"].status.value == "succeeded"
    assert locks(world).get(f"{REPO}:infra/network").holder.pr_number == 11  # type: ignore[union-attr]
    second.send("closed", merged=False)
    wait_for(lambda: locks(world).get(f"{REPO}:infra/network") is None, what="close releases the lock")


def test_an_expired_lock_no_longer_blocks_and_unlock_releases(world) -> None:
    owner = PullRequest(world, 20, {"infra/app/main.tf": "# app v3\n"})
    owner.send("opened")
    owner.finished(owner.new_run(0))
    name = f"{REPO}:infra/app"
    assert locks(world).get(name).holder.pr_number == 20  # type: ignore[union-attr]

    reply = owner.reply_to(owner.comment("/iac-ci unlock"))
    assert "released 1 lock" in reply and name in reply
    assert locks(world).get(name) is None

    owner.reply_to(owner.comment("/iac-ci plan"))  # takes it again
    wait_for(lambda: locks(world).get(name), what="the lock taken again")
    stack = world["stack"]  # a week passes: the stored expiry is what counts
    stack.clients.dynamodb.update_item(TableName=stack.settings.locks_table, Key={"run_id": value(f"prlock#{name}")},
                                       UpdateExpression="SET expires_at = :past",
                                       ExpressionAttributeValues={":past": value(int(time.time()) - 1)})
    other = PullRequest(world, 21, {"infra/app/other.tf": "# other\n"})
    other.send("opened")
    run = other.finished(other.new_run(0))
    assert run.orders["plan-app"].status.value == "succeeded"
    assert locks(world).get(name).holder.pr_number == 21  # type: ignore[union-attr]
    assert any(e.get("type") == "lock_expired_taken" or "expired" in str(e) for e in locks(world).history(name))
    other.send("closed", merged=False)


# ---- the pull request's life -----------------------------------------------------------------------------------
def test_a_push_cancels_the_run_in_flight_and_a_draft_runs_nothing(world) -> None:
    pr = PullRequest(world, 30, {"infra/app/slow": "x\n"})
    pr.send("opened")
    slow = pr.new_run(0)
    wait_for(lambda: world["stack"].store.load(slow).orders.get("plan-app") is not None
             and world["stack"].store.load(slow).orders["plan-app"].status.value == "running", what="the slow plan")
    pr.push({"infra/app/main.tf": "# fast again\n"}, delete=("infra/app/slow",), send=True)
    cancelled = pr.finished(slow, timeout=60)
    assert cancelled.run is not None and cancelled.run.status.value == "cancelled"
    newer = pr.finished(pr.new_run(1))
    assert newer.run is not None and newer.run.commit == pr.sha and newer.run.status.value == "succeeded"
    pr.send("closed", merged=False)

    draft = PullRequest(world, 31, {"infra/app/main.tf": "# draft\n"}, draft=True)
    delivery = draft.send("opened")
    wait_for(lambda: delivery_status(world, delivery) == "draft", what="the draft delivery processed")
    assert draft.runs() == [] and statuses(world, draft.sha) == []
    draft.draft = False
    draft.send("ready_for_review")
    assert draft.finished(draft.new_run(0)).orders["plan-app"].status.value == "succeeded"
    draft.send("closed", merged=False)


# ---- GitHub's failures -----------------------------------------------------------------------------------------
def test_the_final_status_is_written_when_the_comment_cannot_be(world) -> None:
    fake: FakeGitHub = world["fake"]
    pr = PullRequest(world, 40, {"infra/app/main.tf": "# locked conversation\n"})
    with fake.failing("POST", r"/issues/40/comments$", 403):  # a locked conversation
        pr.send("opened")
        run = pr.finished(pr.new_run(0))
        assert run.run is not None and run.run.status.value == "succeeded"
        status = wait_for(lambda: next((s for s in statuses(world, pr.sha) if s["state"] == "success"), None),
                          what="the final status despite the comment's 403")
        assert status["context"] == "iac-ci/infra"
        assert fake.comments_on(REPO, 40) == []
    pr.send("closed", merged=False)


def test_a_permanent_error_fails_the_delivery_and_redelivery_processes_it(world) -> None:
    fake: FakeGitHub = world["fake"]
    pr = PullRequest(world, 41, {"infra/app/main.tf": "# contents forbidden\n"})
    delivery = str(uuid.uuid4())
    body = pr.event("opened")
    with fake.failing("GET", r"/contents/", 403):
        assert deliver(world["url"], body, secret=WEBHOOK_KEY, delivery=delivery).status_code == 202
        wait_for(lambda: delivery_status(world, delivery) == "failed", timeout=30, what="the delivery failed")
        contents_calls = len(fake.requests_to(r"/contents/"))
        time.sleep(3)
        assert len(fake.requests_to(r"/contents/")) == contents_calls, "a permanent error is not retried"
        assert any(s["state"] in ("error", "failure") and "403" in s["description"] for s in statuses(world, pr.sha))
    again = deliver(world["url"], body, secret=WEBHOOK_KEY, delivery=delivery)  # GitHub's "Redeliver"
    assert again.status_code == 202, again.text
    run = pr.finished(pr.new_run(0))
    assert run.orders["plan-app"].status.value == "succeeded"
    pr.send("closed", merged=False)


def test_an_invalid_config_lists_every_problem_and_fails_the_status(world) -> None:
    fake: FakeGitHub = world["fake"]
    pr = PullRequest(world, 42, {"infra/app/main.tf": "# bad config\n"})
    bad = {"orderz": [], "orders": [{"name": "a", "cmds": []}, {"name": "b", "cmds": ["x"], "depends_on": ["ghost"]},
                                     {"name": "c", "cmds": ["x"], "command": "plan", "apply_on": "merge"}]}
    fake.files[(REPO, pr.sha, ".iac-ci.yml")] = yaml.safe_dump(bad)
    pr.send("opened")
    body = wait_for(lambda: next((c["body"] for c in fake.comments_on(REPO, 42) if "is invalid" in c["body"]), None),
                    what="the config comment")
    assert "orderz" in body and "order 'a': cmds" in body and "unknown order 'ghost'" in body and "apply_on" in body
    wait_for(lambda: next((s for s in statuses(world, pr.sha) if s["state"] == "failure"), None),
             what="the failing status")
    fake.files[(REPO, pr.sha, ".iac-ci.yml")] = "orders:\n  - name: a\n    cmds: [x]\n  bad: [\n"
    pr.reply_to(pr.comment("/iac-ci plan"))
    yaml_body = wait_for(lambda: next((c["body"] for c in fake.comments_on(REPO, 42) if "not valid YAML" in c["body"]),
                                      None), what="the YAML error")
    assert "line " in yaml_body and "column " in yaml_body


# ---- the merge queue and GitHub's "Re-run" ---------------------------------------------------------------------
def test_the_merge_queue_gets_the_required_status(world) -> None:
    repo, fake = world["repo"], world["fake"]
    base = git(repo, "rev-parse", "main")
    git(repo, "checkout", "-q", "-B", "gh-readonly-queue/main/pr-50", "main")
    touching = commit_files(repo, {"infra/app/queued.tf": "# queued\n"}, "queue group")
    git(repo, "checkout", "-q", "main")
    doc = merge_group_payload(head_sha=touching, base_sha=base)
    doc["repository"]["clone_url"] = f"file://{repo}"
    assert deliver(world["url"], doc, secret=WEBHOOK_KEY, event="merge_group").status_code == 202
    status = wait_for(lambda: next((s for s in statuses(world, touching) if s["state"] == "success"), None),
                      timeout=90, what="the merge group's status")
    assert status["context"] == "iac-ci/infra"
    assert not [r for r in fake.requests_to(r"/issues/\d+/comments") if r.method == "POST" and touching in r.body]

    git(repo, "checkout", "-q", "-B", "gh-readonly-queue/main/pr-51", "main")
    docs_only = commit_files(repo, {"docs/readme.md": "docs\n"}, "docs group")
    git(repo, "checkout", "-q", "main")
    doc = merge_group_payload(head_sha=docs_only, base_sha=base)
    doc["repository"]["clone_url"] = f"file://{repo}"
    assert deliver(world["url"], doc, secret=WEBHOOK_KEY, event="merge_group").status_code == 202
    nothing = wait_for(lambda: next((s for s in statuses(world, docs_only) if s["state"] == "success"), None),
                       what="the no-op status")
    assert nothing["context"] == "iac-ci/infra" and "nothing to plan" in nothing["description"]


def test_re_run_plans_again_for_a_writer_only(world) -> None:
    pr = PullRequest(world, 60, {"infra/app/main.tf": "# re-run me\n"})
    pr.send("opened")
    first = pr.finished(pr.new_run(0))
    assert first.run is not None
    for login, expect_new in (("rita", False), ("carol", True)):
        doc = check_run_rerequested_payload(head_sha=pr.sha, name="iac-ci/infra", external_id=first.run.run_id,
                                            pr_number=60)
        doc["sender"]["login"] = login
        before = len(pr.runs())
        assert deliver(world["url"], doc, secret=WEBHOOK_KEY, event="check_run").status_code == 202
        if expect_new:
            assert pr.finished(pr.new_run(before)).orders["plan-app"].status.value == "succeeded"
        else:
            wanted = f"/collaborators/{login}/permission"
            wait_for(lambda: any(r.path.endswith(wanted) for r in world["fake"].requests),  # noqa: B023
                     what="the permission check")
            time.sleep(2)
            assert len(pr.runs()) == before
    pr.send("closed", merged=False)


def test_an_expired_plan_is_not_applied(world) -> None:
    """A plan past its retention (its run item's TTL: DynamoDB may not have deleted it yet) is refused by
    name, and nothing is applied; once DynamoDB deletes it, the answer is the same."""
    pr = PullRequest(world, 61, {"infra/app/main.tf": 'resource "aws_s3_bucket" "app" { bucket = "v61" }\n'})
    pr.send("opened")
    plan = pr.finished(pr.new_run(0))
    assert plan.run is not None and plan.run.expire_at is not None
    assert plan.run.expire_at >= int(plan.run.finished_at or 0) + 86400  # a day after it ended, by default
    stack = world["stack"]
    key = {"run_id": value(plan.run.run_id), "sk": value("#run")}
    stack.clients.dynamodb.update_item(TableName=stack.settings.orders_table, Key=key,
                                       UpdateExpression="SET expire_at = :x",
                                       ExpressionAttributeValues={":x": value(int(time.time()) - 1)})
    text = pr.reply_to(pr.comment("/iac-ci apply"))
    assert "has expired" in text and plan.run.run_id in text and "/iac-ci plan" in text
    stack.clients.dynamodb.delete_item(TableName=stack.settings.orders_table, Key=key)
    assert "has expired" in pr.reply_to(pr.comment("/iac-ci apply"))
    assert pr.runs("apply") == []
    pr.send("closed", merged=False)
