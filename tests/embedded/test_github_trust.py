"""Who may run what from a pull request, attacked for real: signed webhooks over HTTP to the
engine's API (``HttpApi`` in front of an ``EmbeddedStack``, as ``iac-ci serve`` runs it, with a
deployment policy), a fake GitHub REST server that records every request, real git repositories
(the base branch and PR branches of ``acme/infra``; a fork), and a Secrets Manager canary.

The policy: only ``acme/*`` repositories; OWNER, MEMBER and COLLABORATOR trusted; fork pull
requests ``without_secrets``; ``prod`` grants the canary secret after 2 approvals of alice and
bob; ``staging`` needs one approval from the ``acme/sre`` team.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fakes.github_server import FakeGitHub
from support.faults.canary import Corpus, forms
from support.github_flow import (
    ConnectionRecorder,
    api_pull_request,
    comment_payload,
    commit_files,
    deliver,
    final_status,
    git,
    new_repo,
    pull_request_payload,
    wait_for,
)
from support.pr_world import github_stack

from iac_ci.embedded.http_api import HttpApi
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.github.pr_runs import PrRuns
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import RunSnapshot
from lambda_runtime.store.codec import from_item

pytestmark = pytest.mark.slow

H = uuid.uuid4().hex[:10]
CANARY = f"canary-{H}-Pr0d-p@ss"
CANARY_SECRET = f"prod/db-password-{H}"
CANARY_DIGEST = hashlib.sha256(CANARY.encode()).hexdigest()
WEBHOOK_KEY = "whsec-" + secrets.token_hex(8)
TOKEN = "ghp_" + secrets.token_hex(18)
REPO = "acme/infra"

POLICY = {
    "repositories": ["acme/*"],
    "fork_pull_requests": "without_secrets",
    "environments": {
        "default": {"description": "what an order without environment gets", "ssm": ["/iac-ci/"]},
        "prod": {"secrets": ["prod/"], "reviewers": ["alice", "bob"], "required_approvals": 2},
        "staging": {"reviewers": ["acme/sre"]},
    },
}

# the base branch's config: what prod and staging orders may do
BASE_CONFIG = {
    "orders": [
        {"name": "plan", "target": "lambda", "cmds": ['echo "planning greeting=${GREETING:-none}"']},
        {"name": "deploy", "target": "lambda", "environment": "prod", "depends_on": ["plan"],
         "secrets": [{"env": "DB_PASSWORD", "secret": CANARY_SECRET}],
         "cmds": [f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)" = "{CANARY_DIGEST}"',
                  'echo "deploying from main with $DB_PASSWORD greeting=${GREETING:-none}'
                  ' version=$(cat version.txt)"']},
        {"name": "notify", "target": "lambda", "depends_on": ["deploy"], "cmds": ["echo notified"]},
        {"name": "smoke", "target": "lambda", "environment": "staging", "cmds": ["echo smoke on staging"]},
    ],
}


def config(*names: str, **changes: Any) -> str:
    """The base config restricted to ``names`` (a PR may drop orders), with ``changes`` applied."""
    orders = [o for o in BASE_CONFIG["orders"] if o["name"] in names]
    return yaml.safe_dump({"orders": orders, **changes}, sort_keys=False)


# ---- the world --------------------------------------------------------------------------------------------


def make_stack(aws: Any, fake: FakeGitHub, policy: dict[str, Any]) -> tuple[EmbeddedStack, HttpApi]:
    return github_stack(aws, fake, policy, webhook_key=WEBHOOK_KEY, token=TOKEN, prefix="gt" + secrets.token_hex(4))


@pytest.fixture(scope="module")
def world(aws, tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("trust")
    base = yaml.safe_dump(BASE_CONFIG, sort_keys=False)
    repo, main_sha = new_repo(root / "infra", {".iac-ci.yml": base, "version.txt": "v1\n"})
    fork, _ = new_repo(root / "evil-infra", {".iac-ci.yml": base, "version.txt": "v1\n"})
    fake = FakeGitHub().start()
    fake.git_repos[REPO] = repo  # the contents API serves acme/infra's files at any commit
    fake.permissions.update({(REPO, "carol"): "write", (REPO, "alice"): "write", (REPO, "bob"): "maintain",
                             (REPO, "rita"): "read"})
    fake.teams["acme/sre"] = {"dave": "active", "erin": "pending"}
    seed = aws_clients(aws)
    seed.secrets.create_secret(Name=CANARY_SECRET, SecretString=CANARY)
    stack, http = make_stack(aws, fake, POLICY)
    yield {"stack": stack, "url": http.url, "fake": fake, "repo": repo, "fork": fork, "main": main_sha, "aws": aws}
    http.stop()
    stack.close()
    fake.stop()


def aws_clients(aws: Any) -> Any:
    from lambda_runtime.aws.clients import AwsClients

    return AwsClients(region=aws.region)


def branch(world: dict[str, Any], name: str, files: dict[str, str], *, repo: Path | None = None) -> str:
    """A PR branch off main with ``files`` changed; its head commit."""
    where = repo or world["repo"]
    git(where, "checkout", "-q", "-B", name, "main")
    sha = commit_files(where, files, f"change on {name}")
    git(where, "checkout", "-q", "main")
    return sha


def send(world: dict[str, Any], doc: dict[str, Any] | bytes, *, event: str = "pull_request",
         delivery: str | None = None) -> Any:
    return deliver(world["url"], doc, secret=WEBHOOK_KEY, event=event, delivery=delivery)


def trusted_pr(world: dict[str, Any], number: int, sha: str, *, author: str = "carol") -> dict[str, Any]:
    return pull_request_payload(number=number, sha=sha, clone_url=f"file://{world['repo']}", author=author,
                                association="MEMBER", base_sha=world["main"])


def say(world: dict[str, Any], number: int, login: str, body: str, **kw: Any) -> dict[str, Any]:
    """``login`` comments ``body`` on the PR; returns iac-ci's reply to that comment."""
    doc = comment_payload(number=number, body=body, login=login, **kw)
    resp = send(world, doc, event="issue_comment")
    assert resp.status_code == 202, resp.text
    marker = f"<!-- iac-ci:reply:{doc['comment']['id']} -->"
    return wait_for(lambda: next((c for c in world["fake"].comments_on(REPO, number)
                                  if c["body"].startswith(marker)), None), what=f"the reply to {login}'s {body!r}")


def runs_of(world: dict[str, Any], number: int, repo: str = REPO) -> list[dict[str, Any]]:
    """Every run item of the orders table for that pull request."""
    stack = world["stack"]
    out = []
    for page in stack.clients.dynamodb.get_paginator("scan").paginate(TableName=stack.settings.orders_table,
                                                                        ConsistentRead=True):
        for raw in page["Items"]:
            item = from_item(raw)
            if item.get("sk") == "#run" and item.get("pr_number") == number and item.get("repo") == repo:
                out.append(item)
    return out


def the_run(world: dict[str, Any], number: int) -> str:
    found = wait_for(lambda: runs_of(world, number), what=f"the run of PR {number}")
    assert len(found) == 1, found
    return str(found[0]["run_id"])


def snapshot(world: dict[str, Any], run_id: str) -> RunSnapshot:
    return world["stack"].store.load(run_id)


def order_status(world: dict[str, Any], run_id: str, name: str) -> str:
    order = snapshot(world, run_id).orders.get(name)
    return order.status.value if order else "(not packaged)"


def wait_status(world: dict[str, Any], run_id: str, name: str, status: str, timeout: float = 90) -> None:
    wait_for(lambda: order_status(world, run_id, name) == status, timeout=timeout,
             what=f"order {name} of {run_id} to be {status}")


def summary_comment(world: dict[str, Any], number: int, run_id: str) -> str:
    c = next((c for c in world["fake"].comments_on(REPO, number) if c["body"].startswith(f"<!-- iac-ci:run:{run_id}")),
             None)
    return c["body"] if c else ""


def wait_final(fake: FakeGitHub, sha: str) -> dict[str, Any]:
    return wait_for(lambda: final_status(fake, sha), what=f"the final commit status of {sha[:12]}")


def delivery_record(world: dict[str, Any], delivery: str) -> dict[str, Any] | None:
    stack = world["stack"]
    raw = stack.clients.dynamodb.get_item(TableName=stack.settings.idempotency_table,
                                          Key={"id": {"S": f"github-delivery#{delivery}"}}, ConsistentRead=True)
    return from_item(raw["Item"]) if "Item" in raw else None


def wait_outcome(world: dict[str, Any], delivery: str) -> str:
    """The outcome the packaging function recorded for a delivery, once it processed it."""
    def done() -> str | None:
        record = delivery_record(world, delivery)
        status = (record or {}).get("status")
        return status if status not in (None, "queued", "processing") else None
    return wait_for(done, what=f"delivery {delivery} processed")


def canary_hits(world: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the canary secret is, in every object version of every bucket and every item of
    every table of the stack, and every request the fake GitHub received."""
    stack = world["stack"]
    clients = stack.clients
    queues = clients.sqs.list_queues().get("QueueUrls", [])  # left to the running consumers
    corpus = Corpus().collect_aws(clients, skip_queues=queues, only=stack.settings.orders_table.removesuffix("-orders"))
    assert corpus.counts.get("s3 object versions", 0) > 0 and corpus.counts.get("dynamodb items", 0) > 0
    for r in list(world["fake"].requests):
        corpus.add(f"github:{r.method} {r.path}", r.path + "\n" + r.body, "github requests")
    return corpus.find(forms(CANARY))


# ---- (a) a fork's pull request ---------------------------------------------------------------------------


def test_a_fork_pull_request_runs_nothing_and_says_why(world) -> None:
    fake, number = world["fake"], 101
    sha = branch(world, "fork-101", {"version.txt": "v2-evil\n"}, repo=world["fork"])
    fake.files[(REPO, sha, ".iac-ci.yml")] = config("plan")
    nobody = ConnectionRecorder()  # the fork's clone URL as the webhook names it: any fetch would connect here
    try:
        doc = pull_request_payload(number=number, sha=sha, clone_url=f"https://127.0.0.1:{nobody.port}/evil/infra.git",
                                   author="mallory", association="NONE", head_repo="evil/infra",
                                   base_sha=world["main"])
        delivery = str(uuid.uuid4())
        resp = send(world, doc, delivery=delivery)
        assert resp.status_code == 202, resp.text
        assert wait_outcome(world, delivery) == "untrusted"
        again = str(uuid.uuid4())  # the fork pushes nothing new; GitHub says synchronize for the same head
        assert send(world, {**doc, "action": "synchronize"}, delivery=again).status_code == 202
        assert wait_outcome(world, again) == "untrusted"
        time.sleep(1)
        assert nobody.connections == 0, "something tried to fetch the fork"
    finally:
        nobody.stop()
    comments = fake.comments_on(REPO, number)
    assert len(comments) == 1, [c["body"] for c in comments]
    body = comments[0]["body"]
    assert body.startswith(f"<!-- iac-ci:untrusted:{sha} -->")
    assert "it comes from a fork (`evil/infra`)" in body
    assert "its author `mallory` is `NONE` on this repository (trusted: OWNER, MEMBER, COLLABORATOR)" in body
    assert "`/iac-ci run`" in body and "fork_pull_requests: without_secrets" in body
    assert not fake.requests_to(f"/contents/.*{sha}"), "the fork's config was read"
    assert not runs_of(world, number)
    assert not [s for s in fake.statuses if s["sha"] == sha]


def test_a_reader_cannot_start_a_fork_pull_request(world) -> None:
    fake, number = world["fake"], 102
    sha = branch(world, "fork-102", {"version.txt": "v2\n"}, repo=world["fork"])
    fake.files[(REPO, sha, ".iac-ci.yml")] = config("plan")
    doc = pull_request_payload(number=number, sha=sha, clone_url=f"file://{world['fork']}", author="mallory",
                               association="NONE", head_repo="evil/infra", base_sha=world["main"])
    fake.pulls[(REPO, number)] = api_pull_request(doc)
    assert send(world, doc).status_code == 202
    for login in ("rita", "mallory"):  # read permission; none at all (the PR's own author)
        reply = say(world, number, login, "/iac-ci run")["body"]
        assert f"@{login}: `/iac-ci run` needs write permission on `acme/infra`" in reply
        assert "Nothing was done" in reply
    time.sleep(1)
    assert not runs_of(world, number)
    assert not fake.requests_to(f"/contents/.*{sha}")
    assert not fake.requests_to(f"/pulls/{number}$"), "the PR was fetched for someone who may not run it"


def test_a_collaborator_runs_a_fork_pull_request_without_credentials(world) -> None:
    fake, number = world["fake"], 103
    sha = branch(world, "fork-103", {"version.txt": "v2-from-fork\n"}, repo=world["fork"])
    fake.files[(REPO, sha, ".iac-ci.yml")] = yaml.safe_dump({"orders": [
        {"name": "lint", "target": "lambda", "cmds": ['echo "fork code version=$(cat version.txt)"', "env | sort"]}]})
    doc = pull_request_payload(number=number, sha=sha, clone_url=f"file://{world['fork']}", author="mallory",
                               association="NONE", head_repo="evil/infra", base_sha=world["main"])
    fake.pulls[(REPO, number)] = api_pull_request(doc)
    assert send(world, doc).status_code == 202
    wait_for(lambda: fake.comments_on(REPO, number), what="the explanation")
    stale = say(world, number, "carol", "/iac-ci run 0000000")["body"]
    assert f"the pull request's head is now `{sha[:12]}`, not `0000000`" in stale and not runs_of(world, number)

    reply = say(world, number, "carol", f"/iac-ci run {sha[:10]}")["body"]
    run_id = the_run(world, number)
    assert f"@carol started plan run `{run_id}` of `{sha[:12]}` without any secret or role" in reply
    done = world["stack"].wait(run_id, timeout=90)
    assert done["status"] == "succeeded", done
    tail = done["orders"]["lint"]["log_tail"]
    assert "fork code version=v2-from-fork" in tail
    assert TOKEN not in json.dumps(done)
    run = snapshot(world, run_id).run
    assert run is not None and run.untrusted and run.trigger == "comment" and run.branch == "main"
    assert run.username == "mallory"  # the PR's author: prevent_self_review still knows who wrote it
    assert wait_final(fake, sha)["state"] == "success"


def test_a_fork_order_asking_for_a_secret_is_refused_and_nothing_runs(world) -> None:
    fake, number = world["fake"], 104
    sha = branch(world, "fork-104", {"version.txt": "v3\n"}, repo=world["fork"])
    fake.files[(REPO, sha, ".iac-ci.yml")] = yaml.safe_dump({"orders": [
        {"name": "lint", "target": "lambda", "cmds": ["echo lint"]},
        {"name": "steal", "target": "lambda", "cmds": ["echo $T"],
         "secrets": [{"env": "T", "ssm": "/iac-ci/anything"}, {"env": "U", "secret": CANARY_SECRET}]},
        {"name": "assume", "target": "lambda", "cmds": ["aws sts get-caller-identity"],
         "aws_role": "arn:aws:iam::123456789012:role/deployer"},
    ]})
    doc = pull_request_payload(number=number, sha=sha, clone_url=f"file://{world['fork']}", author="mallory",
                               association="NONE", head_repo="evil/infra", base_sha=world["main"])
    fake.pulls[(REPO, number)] = api_pull_request(doc)
    assert send(world, doc).status_code == 202
    comment = comment_payload(number=number, body="/iac-ci run", login="carol")
    delivery = str(uuid.uuid4())
    assert send(world, comment, event="issue_comment", delivery=delivery).status_code == 202
    assert wait_outcome(world, delivery) == "invalid"
    problems = next(c["body"] for c in fake.comments_on(REPO, number) if c["body"].startswith("<!-- iac-ci:config:"))
    assert "asks for credentials, and this pull request runs without any" in problems
    for where in ("order 'steal': secrets[0]", "order 'steal': secrets[1]", "order 'assume': aws_role"):
        assert f"- {where}: this pull request comes from a fork or an untrusted author and runs without credentials" \
            in problems, problems
    assert "'lint'" not in problems
    time.sleep(1)
    assert not runs_of(world, number)


# ---- (b) a bot ---------------------------------------------------------------------------------------------


def test_a_dependabot_pull_request_runs_nothing(world) -> None:
    fake, number = world["fake"], 105
    sha = branch(world, "dependabot-105", {"version.txt": "v1-bumped\n"})  # a branch of acme/infra itself
    doc = pull_request_payload(number=number, sha=sha, clone_url=f"file://{world['repo']}", author="dependabot[bot]",
                               user_type="Bot", association="NONE", base_sha=world["main"])
    delivery = str(uuid.uuid4())
    assert send(world, doc, delivery=delivery).status_code == 202
    assert wait_outcome(world, delivery) == "untrusted"
    (comment,) = fake.comments_on(REPO, number)
    assert "because its author `dependabot[bot]` (a bot) is `NONE` on this repository" in comment["body"]
    assert "comes from a fork" not in comment["body"]  # a branch of the repository itself: its author is why
    assert not fake.requests_to(f"/contents/.*{sha}")
    assert not runs_of(world, number)


# ---- (c) the repository allow-list ---------------------------------------------------------------------------


def test_a_repository_outside_the_allow_list_is_refused_and_nothing_is_recorded(world) -> None:
    stack, fake = world["stack"], world["fake"]
    before = len(fake.requests)
    doc = pull_request_payload(number=106, sha=world["main"], clone_url=f"file://{world['repo']}", repo="other/infra")
    delivery = str(uuid.uuid4())
    resp = send(world, doc, delivery=delivery)
    assert resp.status_code == 403
    assert "repository other/infra is not allowed" in resp.json()["error"]
    comment = comment_payload(number=106, body="/iac-ci run", login="carol", repo="other/infra")
    resp = send(world, comment, event="issue_comment", delivery=str(uuid.uuid4()))
    assert resp.status_code == 403 and "other/infra" in resp.json()["error"]
    time.sleep(2)
    assert delivery_record(world, delivery) is None
    ids = [from_item(i)["id"] for p in stack.clients.dynamodb.get_paginator("scan").paginate(
        TableName=stack.settings.idempotency_table) for i in p["Items"]]
    assert not [i for i in ids if delivery in i or "other/infra" in i]
    listed = stack.clients.s3.list_objects_v2(Bucket=stack.settings.internal_bucket, Prefix="webhooks/github/")
    assert not [o for o in listed.get("Contents", []) if delivery in o["Key"]]
    assert not runs_of(world, 106, repo="other/infra")
    assert len(fake.requests) == before


# ---- (d) replays and redeliveries ----------------------------------------------------------------------------


def test_a_replayed_body_under_a_new_delivery_id_is_a_duplicate(world) -> None:
    fake, number = world["fake"], 107
    sha = branch(world, "pr-107", {".iac-ci.yml": config("plan")})
    body = json.dumps(trusted_pr(world, number, sha)).encode()
    first = str(uuid.uuid4())
    assert send(world, body, delivery=first).status_code == 202
    replay = send(world, body, delivery=str(uuid.uuid4()))  # same signed bytes, fresh X-GitHub-Delivery
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    assert send(world, body, delivery=first).json()["duplicate"] is True  # GitHub's redelivery of a processed one
    run_id = the_run(world, number)
    assert world["stack"].wait(run_id, timeout=90)["status"] == "succeeded"

    # a delivery that failed for good may be redelivered from GitHub: it is processed again, and
    # acceptance (idempotent per delivery) answers the same run
    world["stack"].github_events.deliveries.finish(first, "failed")
    redelivered = send(world, body, delivery=first)
    assert redelivered.status_code == 202, redelivered.text
    assert wait_outcome(world, first) == "accepted"
    assert send(world, body, delivery=str(uuid.uuid4())).json()["duplicate"] is True  # still no fresh id gets in
    time.sleep(2)
    assert [r["run_id"] for r in runs_of(world, number)] == [run_id]
    assert len([c for c in fake.comments_on(REPO, number) if c["body"].startswith("<!-- iac-ci:run:")]) == 1


def test_a_replayed_command_is_a_duplicate_and_an_old_one_is_stale(world) -> None:
    fake, number = world["fake"], 108
    doc = comment_payload(number=number, body="/iac-ci help", login="carol")
    body = json.dumps(doc).encode()
    assert send(world, body, event="issue_comment").status_code == 202
    wait_for(lambda: fake.comments_on(REPO, number), what="the help reply")
    replay = send(world, body, event="issue_comment")
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    old = (datetime.now(UTC) - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stale = send(world, comment_payload(number=number, body="/iac-ci approve", login="alice", created_at=old),
                 event="issue_comment")
    assert stale.status_code == 200 and "older than 3 days" in stale.json()["ignored"]
    not_ours = send(world, comment_payload(number=number, body="LGTM, /iac-ci approve", login="alice"),
                    event="issue_comment")
    assert not_ours.status_code == 200 and "ignored" in not_ours.json()
    time.sleep(2)
    assert len(fake.comments_on(REPO, number)) == 1


# ---- (e) approvals of a protected environment ------------------------------------------------------------------


def test_prod_waits_for_two_reviewers_and_its_secret_exists_nowhere_until_then(world) -> None:
    fake, stack, number = world["fake"], world["stack"], 109
    sha = branch(world, "pr-109", {".iac-ci.yml": config("plan", "deploy", "notify"), "version.txt": "v2\n"})
    assert send(world, trusted_pr(world, number, sha, author="carol")).status_code == 202
    run_id = the_run(world, number)
    wait_status(world, run_id, "deploy", "awaiting_approval")
    assert order_status(world, run_id, "notify") == "queued"
    wait_for(lambda: "awaiting approval: 0 of 2" in summary_comment(world, number, run_id), what="the waiting comment")
    assert not canary_hits(world), "the prod secret exists before anyone approved"
    assert PrRuns(stack.clients.dynamodb, stack.settings.idempotency_table).recent(REPO, number)[0].run_id == run_id

    # the PR's author may not approve their own change
    reply = say(world, number, "carol", "/iac-ci approve")["body"]
    assert "nothing was recorded" in reply and "prevent_self_review of environment 'prod'" in reply
    # someone who is not a reviewer
    reply = say(world, number, "mallory", "/iac-ci approve deploy")["body"]
    assert "mallory is not a reviewer of environment 'prod' (reviewers: alice, bob)" in reply
    # a comment written before the run existed (delayed, or replayed from an older push) decides nothing
    earlier = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reply = say(world, number, "alice", "/iac-ci approve", created_at=earlier)["body"]
    assert "no run of this pull request is waiting for approval" in reply
    assert snapshot(world, run_id).orders["deploy"].approvals == ()

    reply = say(world, number, "alice", "/iac-ci approve deploy")["body"]
    assert f"@alice approved 1 order(s) of run `{run_id}`" in reply
    assert "- `deploy` (environment `prod`): 1 of 2 (alice); still waiting for 1 more" in reply
    wait_for(lambda: "awaiting approval: 1 of 2 (alice)" in summary_comment(world, number, run_id),
             what="the comment showing alice's approval")
    time.sleep(2)
    assert order_status(world, run_id, "deploy") == "awaiting_approval"
    again = say(world, number, "alice", "/iac-ci approve -- twice")["body"]
    assert "already approved by alice" in again
    assert not canary_hits(world), "the prod secret exists after one of two approvals"

    reply = say(world, number, "bob", "/iac-ci approve")["body"]
    assert "- `deploy` (environment `prod`): 2 of 2 (alice, bob); approved: it starts now" in reply
    done = stack.wait(run_id, timeout=90)
    assert done["status"] == "succeeded", done
    deploy = done["orders"]["deploy"]
    assert deploy["status"] == "succeeded" and deploy["approval"]["approved_by"] == ["alice", "bob"]
    assert "deploying from main with *** greeting=none version=v2" in deploy["log_tail"]  # the digest test passed
    assert wait_final(fake, sha)["state"] == "success"
    final = summary_comment(world, number, run_id)
    assert "succeeded (approved by alice, bob)" in final
    assert not canary_hits(world), "the prod secret was stored or posted somewhere"


def test_a_team_reviewer_approves_staging_and_a_pending_member_cannot(world) -> None:
    number = 110
    sha = branch(world, "pr-110", {".iac-ci.yml": config("smoke")})
    assert send(world, trusted_pr(world, number, sha, author="carol")).status_code == 202
    run_id = the_run(world, number)
    wait_status(world, run_id, "smoke", "awaiting_approval")
    reply = say(world, number, "erin", "/iac-ci approve")["body"]
    assert "erin is not a reviewer of environment 'staging' (reviewers: acme/sre)" in reply
    assert world["fake"].requests_to("/orgs/acme/teams/sre/memberships/erin$")
    reply = say(world, number, "dave", "/iac-ci approve smoke")["body"]
    assert "- `smoke` (environment `staging`): 1 of 1 (dave); approved: it starts now" in reply
    done = world["stack"].wait(run_id, timeout=90)
    assert done["status"] == "succeeded" and done["orders"]["smoke"]["approval"]["approved_by"] == ["dave"]


# ---- (f) a rejection --------------------------------------------------------------------------------------------


def test_a_rejection_fails_the_run_and_skips_what_depends_on_it(world) -> None:
    fake, number = world["fake"], 111
    sha = branch(world, "pr-111", {".iac-ci.yml": config("plan", "deploy", "notify"), "version.txt": "v9\n"})
    assert send(world, trusted_pr(world, number, sha, author="carol")).status_code == 202
    run_id = the_run(world, number)
    wait_status(world, run_id, "deploy", "awaiting_approval")
    refused = say(world, number, "alice", "/iac-ci reject ghost -- no")["body"]
    assert "order 'ghost' does not exist" in refused and order_status(world, run_id, "deploy") == "awaiting_approval"

    reply = say(world, number, "alice", "/iac-ci reject deploy -- the plan deletes the database")["body"]
    assert f"@alice rejected 1 order(s) of run `{run_id}`" in reply
    assert "- `deploy` (environment `prod`): rejected: the plan deletes the database" in reply
    done = world["stack"].wait(run_id, timeout=90)
    assert done["status"] == "failed", done
    assert done["orders"]["deploy"]["status"] == "rejected"
    assert done["orders"]["deploy"]["approval"]["rejected_by"] == "alice"
    assert done["orders"]["notify"]["status"] == "skipped"
    assert done["orders"]["plan"]["status"] == "succeeded"
    assert wait_final(fake, sha)["state"] == "failure"
    body = summary_comment(world, number, run_id)
    assert "| `deploy` | 🛑 rejected by alice |" in body
    assert "rejected by alice: the plan deletes the database" in body
    late = say(world, number, "bob", "/iac-ci approve")["body"]
    assert "no run of this pull request is waiting for approval" in late


# ---- (g) protected orders come from the base branch ------------------------------------------------------------


def test_a_pull_request_cannot_change_what_runs_in_prod(world) -> None:
    fake, number = world["fake"], 112
    orders = json.loads(json.dumps(BASE_CONFIG["orders"][:3]))
    orders[1]["cmds"] = ['echo "EVIL from the pull request: $DB_PASSWORD" | base64']  # the prod order, changed
    orders.append({"name": "exfiltrate", "target": "lambda", "environment": "prod",  # a prod order, added
                   "secrets": [{"env": "X", "secret": CANARY_SECRET}], "cmds": ["echo EXFILTRATED $X"]})
    head_config = yaml.safe_dump({"orders": orders, "env": {"GREETING": "from-head"}}, sort_keys=False)
    sha = branch(world, "pr-112", {".iac-ci.yml": head_config, "version.txt": "v2-from-pr\n"})
    assert send(world, trusted_pr(world, number, sha, author="carol")).status_code == 202
    run_id = the_run(world, number)
    note = wait_for(lambda: next((c["body"] for c in fake.comments_on(REPO, number)
                                  if c["body"].startswith("<!-- iac-ci:protected:")), None), what="the protected note")
    assert "protected environments run `main`'s orders" in note
    assert "- `deploy`: replaced by its definition on `main`" in note
    assert "- `exfiltrate`: dropped (not defined there)" in note
    assert fake.requests_to(f"/contents/.iac-ci.yml\\?ref={world['main']}$"), "the base config was not read"
    wait_status(world, run_id, "deploy", "awaiting_approval")
    assert sorted(snapshot(world, run_id).orders) == ["deploy", "notify", "plan"]
    say(world, number, "alice", "/iac-ci approve")
    say(world, number, "bob", "/iac-ci approve")
    done = world["stack"].wait(run_id, timeout=90)
    assert done["status"] == "succeeded", done
    # main's commands, on the pull request's code, without the head's job env
    assert "deploying from main with *** greeting=none version=v2-from-pr" in done["orders"]["deploy"]["log_tail"]
    assert "EVIL" not in json.dumps(done)
    assert "planning greeting=from-head" in done["orders"]["plan"]["log_tail"]  # a head order keeps the head's env
    bundle = world["stack"].clients.s3.get_object(Bucket=world["stack"].settings.internal_bucket,
                                                  Key=layout.job_key(run_id))["Body"].read()
    assert b"EVIL" not in bundle and b"exfiltrate" not in bundle
    assert not canary_hits(world)


# ---- fork_pull_requests: never --------------------------------------------------------------------------------


def test_under_never_a_fork_pull_request_does_not_run_even_when_asked(world) -> None:
    fake = world["fake"]
    stack, http = make_stack(world["aws"], fake, {**POLICY, "fork_pull_requests": "never"})
    try:
        number = 113
        sha = branch(world, "fork-113", {"version.txt": "v5\n"}, repo=world["fork"])
        fake.files[(REPO, sha, ".iac-ci.yml")] = config("plan")
        doc = pull_request_payload(number=number, sha=sha, clone_url=f"file://{world['fork']}", author="mallory",
                                   association="CONTRIBUTOR", head_repo="evil/infra", base_sha=world["main"])
        fake.pulls[(REPO, number)] = api_pull_request(doc)
        local = {**world, "url": http.url, "stack": stack}
        assert send(local, doc).status_code == 202
        explanation = wait_for(lambda: fake.comments_on(REPO, number), what="the explanation")[0]["body"]
        assert "`fork_pull_requests: never`" in explanation and "it will not run here" in explanation
        reply = say(local, number, "carol", "/iac-ci run")["body"]
        assert "this pull request will not run on this deployment" in reply and "`never`" in reply
        time.sleep(1)
        assert not runs_of(local, number)
        assert not fake.requests_to(f"/contents/.*{sha}")
    finally:
        http.stop()
        stack.close()


# ---- /iac-ci run on a trusted pull request; fork_pull_requests: on_approval -------------------------------------


def test_run_on_a_trusted_pull_request_starts_a_new_run_of_its_head(world) -> None:
    fake, number = world["fake"], 114
    sha = branch(world, "pr-114", {".iac-ci.yml": config("plan")})
    doc = trusted_pr(world, number, sha)
    fake.pulls[(REPO, number)] = api_pull_request(doc)
    assert send(world, doc).status_code == 202
    first = the_run(world, number)
    assert world["stack"].wait(first, timeout=90)["status"] == "succeeded"
    refused = say(world, number, "rita", "/iac-ci run")["body"]
    assert "needs write permission" in refused
    delivery = str(uuid.uuid4())
    assert send(world, comment_payload(number=number, body="/iac-ci run", login="carol"), event="issue_comment",
                delivery=delivery).status_code == 202
    assert wait_outcome(world, delivery) == "accepted"
    runs = {r["run_id"]: r for r in runs_of(world, number)}
    assert len(runs) == 2 and first in runs
    (second,) = set(runs) - {first}
    assert runs[second]["trigger"] == "comment" and runs[second]["commit"] == sha and not runs[second].get("untrusted")
    assert world["stack"].wait(second, timeout=90)["status"] == "succeeded"


def test_under_on_approval_a_fork_order_with_credentials_waits_for_a_collaborator(world) -> None:
    fake, aws = world["fake"], world["aws"]
    parameter, value = f"/iac-ci/fork-{H}/token", f"fork-param-{H}-value"
    digest = hashlib.sha256(value.encode()).hexdigest()
    aws_clients(aws).ssm.put_parameter(Name=parameter, Value=value, Type="SecureString", Overwrite=True)
    stack, http = make_stack(aws, fake, {**POLICY, "fork_pull_requests": "on_approval"})
    local = {**world, "url": http.url, "stack": stack}
    try:
        number = 115
        sha = branch(world, "fork-115", {"version.txt": "v6\n"}, repo=world["fork"])
        fake.files[(REPO, sha, ".iac-ci.yml")] = yaml.safe_dump({"orders": [
            {"name": "lint", "target": "lambda", "cmds": ["echo lint"]},
            {"name": "integration", "target": "lambda", "secrets": [{"env": "T", "ssm": parameter}],
             "cmds": [f'test "$(printf %s "$T" | sha256sum | cut -c1-64)" = "{digest}"', 'echo "T=$T"']},
        ]})
        doc = pull_request_payload(number=number, sha=sha, clone_url=f"file://{world['fork']}", author="mallory",
                                   association="FIRST_TIME_CONTRIBUTOR", head_repo="evil/infra",
                                   base_sha=world["main"])
        fake.pulls[(REPO, number)] = api_pull_request(doc)
        assert send(local, doc).status_code == 202
        explanation = wait_for(lambda: fake.comments_on(REPO, number), what="the explanation")[0]["body"]
        assert "`fork_pull_requests: on_approval`" in explanation
        reply = say(local, number, "carol", "/iac-ci run")["body"]
        assert "with every order that receives credentials waiting for `/iac-ci approve`" in reply
        run_id = the_run(local, number)
        wait_status(local, run_id, "integration", "awaiting_approval")
        wait_status(local, run_id, "lint", "succeeded")
        for login, why in (("mallory", "prevent_self_review"), ("rita", "is not a reviewer of environment 'default'")):
            assert why in say(local, number, login, "/iac-ci approve")["body"]
        reply = say(local, number, "carol", "/iac-ci approve integration")["body"]
        assert "- `integration` (environment `default`): 1 of 1 (carol); approved: it starts now" in reply
        done = stack.wait(run_id, timeout=90)
        assert done["status"] == "succeeded", done
        assert "T=***" in done["orders"]["integration"]["log_tail"]
        assert done["orders"]["integration"]["approval"]["approved_by"] == ["carol"]
        record = snapshot(local, run_id).orders["integration"].approvals[0]
        assert record["rule"] == "fork_pull_requests: on_approval (collaborator with write permission)"
    finally:
        http.stop()
        stack.close()
