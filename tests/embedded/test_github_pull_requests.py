"""GitHub end to end: `iac-ci serve` driven over HTTP with signed webhook payloads (fixture
files), talking to a fake GitHub REST server on loopback; a local git repository stands in
for the repository being cloned."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from support.fakes.github_server import FakeGitHub
from support.github_flow import deliver as deliver_to
from support.github_flow import final_status, git, pull_request_payload, wait_for
from support.paths import GITHUB_FIXTURES

pytestmark = pytest.mark.slow
FIXTURES = GITHUB_FIXTURES
WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
TOKEN = "ghp_" + "T" * 36
SECRET_VALUE = "SuperSecret-" + uuid.uuid4().hex[:8]
CONFIG = """
orders:
  - name: plan
    target: lambda
    dir: infra
    when: {paths: ["**"]}
    lock: false
    secrets: [{env: TF_TOKEN, ssm: /iac-ci/tf-token}]
    cmds: ["cat main.tf", "echo token=$TF_TOKEN"]
  - name: apply
    depends_on: [plan]
    cmds: ["echo applied"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    repo = tmp_path_factory.mktemp("gh") / "infra"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text('resource "aws_s3_bucket" "staging" {}\n')
    (repo / ".iac-ci.yml").write_text(CONFIG)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "staging bucket")
    fake = FakeGitHub().start()
    sha = git(repo, "rev-parse", "HEAD")
    fake.files[("acme/infra", sha, ".iac-ci.yml")] = CONFIG
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.Popen(
        ["iac-ci", "serve", "--port", "0", "--webhook-secret", WEBHOOK_SECRET, "--github-api-url", fake.url,
         "--github-token", TOKEN, "--ssm", f"/iac-ci/tf-token={SECRET_VALUE}"],
        # stderr to a file: serve logs every request, and a pipe nobody reads would fill and stall it
        stdout=subprocess.PIPE, stderr=(tmp_path_factory.mktemp("serve") / "stderr.log").open("w"), text=True,
        env=env)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), url
    yield {"url": url, "fake": fake, "repo": repo, "sha": sha}
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # still finishing a run: the test is over, its outcome is known
        proc.kill()
        proc.wait(timeout=10)
    fake.stop()


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join('*' + chr(97 + i) for _ in range(9))}]\n" for i in range(8))


def payload(world: dict[str, Any], *, sha: str | None = None, number: int = 7, action: str = "opened") -> bytes:
    """A trusted pull request (a MEMBER's branch of acme/infra)."""
    return json.dumps(pull_request_payload(number=number, sha=sha or world["sha"], action=action,
                                           clone_url=f"file://{world['repo']}")).encode()


def deliver(world: dict[str, Any], body: bytes, *, event: str = "pull_request", delivery: str | None = None,
            secret: str = WEBHOOK_SECRET) -> requests.Response:
    return deliver_to(world["url"], body, secret=secret, event=event, delivery=delivery)


def test_ping(world) -> None:
    body = (FIXTURES / "ping.json").read_bytes()
    resp = deliver(world, body, event="ping")
    assert resp.status_code == 200 and resp.json() == {"pong": True}


def test_bad_signature_is_401_and_starts_nothing(world) -> None:
    before = len(world["fake"].requests)
    resp = deliver(world, payload(world, number=90), secret="wrong")
    assert resp.status_code == 401
    time.sleep(2)
    assert len(world["fake"].requests) == before


def test_oversized_payload_is_413(world) -> None:
    resp = deliver(world, b"{" + b" " * 1_100_000 + b"}")
    assert resp.status_code == 413


def test_pull_request_runs_the_repository_config_and_reports_on_the_pr(world) -> None:
    fake, sha = world["fake"], world["sha"]
    delivery = str(uuid.uuid4())
    started = time.monotonic()
    resp = deliver(world, payload(world), delivery=delivery)
    assert resp.status_code == 202 and time.monotonic() - started < 1.0  # answered before any work
    status = wait_for(lambda: final_status(fake, sha), what="the final commit status")
    assert status["state"] == "success" and status["context"] == "iac-ci/infra"
    states = [s["state"] for s in fake.statuses if s["sha"] == sha]
    assert states[0] == "pending" and states[-1] == "success"
    ours = [c for c in fake.comments.values() if c["_issue"] == ("acme/infra", 7)]
    assert len(ours) == 1, "one summary comment per run"
    body = ours[0]["body"]
    assert "**succeeded**" in body and "| `plan` |" in body and "| `apply` |" in body
    assert "token=***" in body
    posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/issues/7/comments")]
    assert len(posts) == 1 and ours[0]["edits"] >= 1  # created once, then edited in place
    everything = "".join(r.body + r.path for r in fake.requests)
    assert SECRET_VALUE not in everything and TOKEN not in everything

    again = deliver(world, payload(world), delivery=delivery)  # GitHub's redelivery
    assert again.status_code == 200 and again.json()["duplicate"] is True
    time.sleep(3)
    assert len([c for c in fake.comments.values() if c["_issue"] == ("acme/infra", 7)]) == 1
    assert len([s for s in fake.statuses if s["sha"] == sha and s["state"] == "pending"]) == 1


def test_invalid_config_gets_one_comment_listing_every_problem(world) -> None:
    fake = world["fake"]
    sha = "b" * 40
    fake.files[("acme/infra", sha, ".iac-ci.yml")] = (
        "orders:\n  - name: a\n    cmds: []\n  - name: b\n    cmds: [x]\n    depends_on: [ghost]\n    timeout: -5\n")
    assert deliver(world, payload(world, sha=sha, number=8)).status_code == 202
    comment = wait_for(lambda: next((c for c in fake.comments.values() if c["_issue"] == ("acme/infra", 8)), None),
                       what="the config problems comment")
    body = comment["body"]
    assert "is invalid" in body
    assert "order 'a': cmds" in body and "unknown order 'ghost'" in body and "order 'b': timeout" in body
    # no run, and a failing status, so the merge is blocked by a config nobody can run
    status = wait_for(lambda: final_status(fake, sha), what="the failing status")
    assert status["state"] == "failure" and "3 problem(s)" in status["description"]
    assert not [s for s in fake.statuses if s["sha"] == sha and s["state"] == "pending"]


def test_an_alias_bomb_in_the_config_is_refused_without_expanding(world) -> None:
    """Nine levels of nine aliases (a 'billion laughs' in 1 KB) would be ~387 million strings."""
    fake = world["fake"]
    sha = "e" * 40
    fake.files[("acme/infra", sha, ".iac-ci.yml")] = ALIAS_BOMB
    assert deliver(world, payload(world, sha=sha, number=13)).status_code == 202
    comment = wait_for(lambda: next((c for c in fake.comments.values() if c["_issue"] == ("acme/infra", 13)), None),
                       what="the config problems comment")
    assert "YAML aliases are not accepted (line 2, column" in comment["body"]
    wait_for(lambda: final_status(fake, sha), what="the failing status")
    assert [s["state"] for s in fake.statuses if s["sha"] == sha] == ["failure"]  # no job, a failing status


def test_repository_without_config_gets_no_job(world) -> None:
    fake = world["fake"]
    sha = "c" * 40
    assert deliver(world, payload(world, sha=sha, number=9)).status_code == 202
    wait_for(lambda: any(r.path.startswith("/repos/acme/infra/contents/.iac-ci.yml?ref=" + sha)
                         for r in fake.requests), what="the config lookup")
    time.sleep(2)
    assert not [c for c in fake.comments.values() if c["_issue"] == ("acme/infra", 9)]
    assert not [s for s in fake.statuses if s["sha"] == sha]


def test_github_5xx_and_rate_limits_are_retried(world) -> None:
    fake, sha = world["fake"], world["sha"]
    fake.files[("acme/infra", sha, ".iac-ci.yml")] = CONFIG
    fake.fail_next.extend([(502, {}), (429, {"Retry-After": "1"})])
    assert deliver(world, payload(world, number=11, action="synchronize")).status_code == 202
    wait_for(lambda: next((c for c in fake.comments.values() if c["_issue"] == ("acme/infra", 11)
                           and "**succeeded**" in c["body"]), None), what="the final comment despite failures")


def test_300_orders_with_10kb_logs_fit_one_comment(world) -> None:
    import yaml

    fake = world["fake"]
    git(world["repo"], "commit", "-q", "--allow-empty", "-m", "many services")
    sha = git(world["repo"], "rev-parse", "HEAD")
    noisy = "head -c 10240 /dev/zero | tr '\\0' x; echo"
    orders = [{"name": f"svc-{i:03d}", "target": "lambda", "cmds": [noisy]} for i in range(300)]
    fake.files[("acme/infra", sha, ".iac-ci.yml")] = yaml.safe_dump({"orders": orders})
    assert deliver(world, payload(world, sha=sha, number=12)).status_code == 202
    status = wait_for(lambda: final_status(fake, sha), timeout=240, what="the 300-order run")
    assert status["state"] == "success"
    ours = [c for c in fake.comments.values() if c["_issue"] == ("acme/infra", 12)]
    assert len(ours) == 1
    body = ours[0]["body"]
    assert len(body) <= 65536
    assert all(f"`svc-{i:03d}`" in body for i in range(300))
    assert "xxxxxxxxxx" in body  # some log tails survive, shortened
