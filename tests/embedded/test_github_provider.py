"""The GitHub provider (``GitHubVcs``) driven directly against the fake GitHub REST server over
real HTTP: feedback that survives GitHub's failures, check runs for a GitHub App, apply
requirements read from reviews, compares, statuses and check runs, changed files across
pages, reactions, and the folding of older runs' comments."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github import GithubException
from support.fakes.github_server import FakeGitHub
from support.github_flow import commit_files, git, new_repo

from lambda_runtime.github.comment import FOLDED_MARKER, marker
from lambda_runtime.github.provider import GitHubVcs, is_permanent
from lambda_runtime.settings import Settings

REPO = "acme/infra"
PR = 7
SHA = "a" * 40
OLD_SHA = "b" * 40
INSTALLATION = 99
SECRETS = {"gh-token": "ghp_" + "T" * 36}


class Vcs(GitHubVcs):
    """The provider with its credentials from a dict instead of Secrets Manager."""

    def _secret(self, secret_id: str) -> str:
        return SECRETS[secret_id]


class Links:
    """A stand-in for ``intake.log_links.LogLinks``."""

    def for_run(self, run_id: str, order: str | None = None) -> str | None:
        return f"https://ci.example/logs/{run_id}?sig=s1"


def settings(fake: FakeGitHub, **changes: Any) -> Settings:
    fields: dict[str, Any] = {"github_api_url": fake.url, **changes}
    return Settings(orders_table="o", events_table="e", locks_table="l", idempotency_table="i", internal_bucket="b",
                    done_bucket="d", state_bucket="s", kms_key_arn="k", watchdog_arn="w", webhook_secret_id="api",
                    github_token_secret_id="gh-token", github_seconds_between_writes=0, **fields)


@pytest.fixture()
def fake() -> Iterator[FakeGitHub]:
    server = FakeGitHub().start()
    server.pulls[(REPO, PR)] = {"user": {"login": "alice", "id": 1}, "base": {"ref": "main", "sha": OLD_SHA},
                                "head": {"ref": "change-7", "sha": SHA}, "state": "open", "draft": False,
                                "mergeable": True, "mergeable_state": "clean"}
    yield server
    server.stop()


@pytest.fixture()
def sleeps() -> list[float]:
    return []


@pytest.fixture()
def vcs(fake: FakeGitHub, sleeps: list[float]) -> GitHubVcs:
    return Vcs(settings(fake), None, retry_total=1, sleep=sleeps.append)  # type: ignore[arg-type]


def summary(run_id: str = "r1", status: str = "running", *, command: str | None = None,
            installation_id: int | None = None, **orders: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "run_id": run_id, "status": status, "name": "infra", "trace_id": f"{run_id}:1", "repo": REPO,
        "pr_number": PR, "commit": SHA, "vcs": "github", "installation_id": installation_id,
        "orders": {name: {"status": st, "target": "lambda", "log_tail": f"{name} says hi"}
                   for name, st in (orders or {"plan": "succeeded" if status == "succeeded" else "running"}).items()},
    }
    if command:
        doc["command"] = command
    return doc


def run_comments(fake: FakeGitHub) -> list[dict[str, Any]]:
    return sorted((c for c in fake.comments_on(REPO, PR) if c["body"].startswith("<!-- iac-ci:run:")),
                  key=lambda c: c["id"])


# ---- feedback that survives GitHub's failures -------------------------------------------------
def test_the_status_is_written_when_the_comment_is_refused(fake, vcs) -> None:
    fake.fail_routes[("POST", rf"/issues/{PR}/comments$")] = 403  # a locked conversation
    with pytest.raises(GithubException) as raised:
        vcs.run_finished(summary(status="failed", plan="failed", apply="locked"))
    assert raised.value.status == 403 and is_permanent(raised.value)
    (status,) = fake.statuses
    assert status["state"] == "failure" and status["context"] == "iac-ci/infra"
    assert status["description"] == "1 failed, 1 locked"
    assert not fake.comments_on(REPO, PR)


def test_the_comment_is_written_when_the_status_fails(fake, vcs) -> None:
    fake.fail_routes[("POST", r"/statuses/")] = 502
    with pytest.raises(Exception) as raised:
        vcs.run_finished(summary(status="succeeded"))
    assert not is_permanent(raised.value)
    (comment,) = run_comments(fake)
    assert "**succeeded**" in comment["body"]
    del fake.fail_routes[("POST", r"/statuses/")]
    vcs.run_finished(summary(status="succeeded"))  # once GitHub answers again, both are written
    assert [s["state"] for s in fake.statuses] == ["success"] and len(run_comments(fake)) == 1


def test_a_deleted_comment_is_posted_again_and_edited_from_then_on(fake, vcs) -> None:
    vcs.run_started(summary())
    (first,) = run_comments(fake)
    assert requests.delete(f"{fake.url}/repos/{REPO}/issues/comments/{first['id']}", timeout=5).status_code == 204
    vcs.run_finished(summary(status="succeeded"))
    (second,) = run_comments(fake)
    assert second["id"] != first["id"] and "**succeeded**" in second["body"]
    vcs.run_updated(summary(status="succeeded"))
    assert run_comments(fake)[0]["edits"] == 1
    assert len(fake.requests_to(rf"/issues/{PR}/comments(\?|$)")) == 3  # list, post, post again; no list after
    assert [s["state"] for s in fake.statuses] == ["pending", "success"]


def test_permanent_and_transient_errors() -> None:
    assert is_permanent(GithubException(404, {"message": "Not Found"}, {}))
    assert is_permanent(GithubException(422, {"message": "Validation Failed"}, {}))
    assert is_permanent(GithubException(403, {"message": "Resource not accessible by integration"}, {}))
    assert not is_permanent(GithubException(429, {"message": "Too Many Requests"}, {}))
    assert not is_permanent(GithubException(403, {"message": "x"}, {"X-RateLimit-Remaining": "0"}))
    assert not is_permanent(GithubException(403, {"message": "x"}, {"Retry-After": "30"}))
    assert not is_permanent(GithubException(403, {"message": "You have exceeded a secondary rate limit"}, {}))
    assert not is_permanent(GithubException(502, {"message": "Bad Gateway"}, {}))
    assert not is_permanent(ConnectionError("reset"))


def test_a_404_from_github_is_permanent(fake, vcs) -> None:
    with pytest.raises(GithubException) as raised:
        vcs.pull_request(REPO, 404)
    assert is_permanent(raised.value)


# ---- statuses: contexts, links, descriptions --------------------------------------------------
def test_plan_and_apply_runs_report_under_their_own_contexts_with_the_log_link(fake) -> None:
    vcs = Vcs(settings(fake), None, log_links=Links())  # type: ignore[arg-type]
    vcs.run_started(summary("p1"))
    vcs.run_finished(summary("p1", "succeeded"))
    vcs.run_finished(summary("a1", "failed", command="apply", plan="succeeded", apply="blocked"))
    assert [(s["context"], s["state"]) for s in fake.statuses] == [
        ("iac-ci/infra", "pending"), ("iac-ci/infra", "success"), ("iac-ci/infra/apply", "failure")]
    assert fake.statuses[0]["target_url"] == "https://ci.example/logs/p1?sig=s1"
    assert fake.statuses[2]["description"] == "1 blocked"
    bodies = [c["body"] for c in run_comments(fake)]
    assert "[Full logs](https://ci.example/logs/p1?sig=s1)" in bodies[0] and "· apply ·" in bodies[1]


def test_without_log_links_there_is_no_target_url(fake, vcs) -> None:
    vcs.run_finished(summary(status="succeeded"))
    assert fake.statuses[0]["target_url"] is None and "Full logs" not in run_comments(fake)[0]["body"]


def test_the_deployments_log_links_are_signed_and_the_secret_read_once(fake) -> None:
    pytest.importorskip("lambda_runtime.intake.log_links")
    reads: list[str] = []

    class Counting(Vcs):
        def _secret(self, secret_id: str) -> str:
            reads.append(secret_id)
            return "link-key" if secret_id == "logs-key" else super()._secret(secret_id)

    vcs = Counting(settings(fake, api_url="https://ci.example/prod", log_link_secret_id="logs-key"),
                   None)  # type: ignore[arg-type]
    run_id = "0123456789abcdef"
    vcs.run_started(summary(run_id))
    vcs.run_updated(summary(run_id))
    vcs.run_finished(summary(run_id, "succeeded"))
    link = fake.statuses[-1]["target_url"]
    assert link.startswith(f"https://ci.example/prod/runs/{run_id}/logs?expires=") and "&sig=" in link
    assert f"[Full logs]({link})" in run_comments(fake)[0]["body"]
    assert reads.count("logs-key") == 1


def test_set_status_outside_a_run(fake, vcs) -> None:
    vcs.set_status(REPO, SHA, "failure", "invalid .iac-ci.yml: " + "x" * 200, context="iac-ci/config",
                   target_url="https://ci.example/why")
    (status,) = fake.statuses
    assert status["state"] == "failure" and status["context"] == "iac-ci/config"
    assert len(status["description"]) == 140 and status["target_url"] == "https://ci.example/why"


# ---- GitHub App: check runs ---------------------------------------------------------------
@pytest.fixture(scope="module")
def app_secret() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({"app_id": 4242, "private_key": pem})


def app_vcs(fake: FakeGitHub, app_secret: str) -> GitHubVcs:
    SECRETS["gh-app"] = app_secret
    return Vcs(settings(fake, github_app_secret_id="gh-app"), None, log_links=Links())  # type: ignore[arg-type]


def test_an_app_reports_with_check_runs_found_again_after_a_restart(fake, app_secret) -> None:
    vcs = app_vcs(fake, app_secret)
    vcs.run_started(summary("r1", installation_id=INSTALLATION))
    (run,) = fake.check_runs_on(REPO, SHA)
    assert (run["name"], run["status"], run["external_id"]) == ("iac-ci/infra", "in_progress", "r1")
    assert run["details_url"] == "https://ci.example/logs/r1?sig=s1"
    assert not fake.statuses
    token = fake.installation_tokens[INSTALLATION]
    (minted,) = fake.requests_to(rf"/app/installations/{INSTALLATION}/access_tokens")
    assert minted.headers["Authorization"].startswith("Bearer ")  # the App's JWT
    (posted,) = [r for r in fake.requests_to(r"/check-runs$") if r.method == "POST"]
    assert posted.headers["Authorization"] == f"token {token}"

    restarted = app_vcs(fake, app_secret)  # another process: no cached id, found by external_id
    restarted.run_finished(summary("r1", "failed", installation_id=INSTALLATION, plan="failed", apply="locked"))
    (run,) = fake.check_runs_on(REPO, SHA)
    assert (run["status"], run["conclusion"], run["_patches"]) == ("completed", "failure", 1)
    assert run["output"]["title"] == "iac-ci/infra: failed"
    assert "1 failed, 1 locked" in run["output"]["summary"] and len(run["output"]["summary"]) < 200
    assert fake.requests_to(r"/commits/a+/check-runs\?.*check_name=iac-ci%2Finfra")


def test_an_app_apply_run_and_a_cancelled_one(fake, app_secret) -> None:
    vcs = app_vcs(fake, app_secret)
    vcs.run_finished(summary("a1", "succeeded", command="apply", installation_id=INSTALLATION))
    vcs.run_finished(summary("a2", "cancelled", command="apply", installation_id=INSTALLATION))
    runs = sorted(fake.check_runs_on(REPO, SHA), key=lambda r: r["id"])
    assert [(r["name"], r["external_id"], r["status"], r["conclusion"]) for r in runs] == [
        ("iac-ci/infra/apply", "a1", "completed", "success"), ("iac-ci/infra/apply", "a2", "completed", "cancelled")]


def test_set_status_in_app_mode_completes_the_pending_check_run(fake, app_secret) -> None:
    vcs = app_vcs(fake, app_secret)
    vcs.set_status(REPO, SHA, "pending", "merge queue: checking", context="iac-ci/infra",
                   installation_id=INSTALLATION)
    vcs.set_status(REPO, SHA, "success", "nothing to run", context="iac-ci/infra", installation_id=INSTALLATION)
    vcs.set_status(REPO, SHA, "error", "invalid config", context="iac-ci/config", installation_id=INSTALLATION)
    runs = sorted(fake.check_runs_on(REPO, SHA), key=lambda r: r["id"])
    assert [(r["name"], r["status"], r["conclusion"]) for r in runs] == [
        ("iac-ci/infra", "completed", "success"), ("iac-ci/config", "completed", "failure")]
    assert runs[0]["output"]["title"] == "nothing to run"


# ---- apply requirements -------------------------------------------------------------------
def review(login: str, state: str, commit: str = SHA) -> dict[str, Any]:
    return {"user": {"login": login}, "state": state, "commit_id": commit}


def test_an_approval_on_the_head_commit_meets_approved(fake, vcs) -> None:
    fake.reviews[(REPO, PR)] = [review("bob", "COMMENTED"), review("bob", "APPROVED"), review("bob", "COMMENTED")]
    assert vcs.unmet_requirements(REPO, PR, SHA, ["approved"]) == []


@pytest.mark.parametrize("reviews", [
    [review("bob", "APPROVED", OLD_SHA)],  # approved before the last push: stale
    [review("alice", "APPROVED")],  # the author's own
    [review("bob", "APPROVED"), review("bob", "CHANGES_REQUESTED")],
    [review("bob", "APPROVED"), review("bob", "DISMISSED")],
    [],
], ids=["stale", "author", "changes-requested", "dismissed", "none"])
def test_approvals_that_do_not_count(fake, vcs, reviews) -> None:
    fake.reviews[(REPO, PR)] = reviews
    assert vcs.unmet_requirements(REPO, PR, SHA, ["approved"]) == [
        "`approved` not met: 0 of 1 approving reviews on the head commit"]


def test_two_reviews_needed_across_pages(fake, vcs) -> None:
    fake.reviews[(REPO, PR)] = [review(f"u{i}", "COMMENTED") for i in range(150)] + [review("bob", "APPROVED")]
    assert vcs.unmet_requirements(REPO, PR, SHA, ["approved"], required_reviews=2) == [
        "`approved` not met: 1 of 2 approving reviews on the head commit"]
    fake.reviews[(REPO, PR)].append(review("carol", "APPROVED"))
    assert vcs.unmet_requirements(REPO, PR, SHA, ["approved"], required_reviews=2) == []


def test_mergeable_waits_for_github_to_compute_it(fake, vcs, sleeps) -> None:
    fake.pull_sequence[(REPO, PR)] = [{"mergeable": None, "mergeable_state": "unknown"}] * 2
    assert vcs.unmet_requirements(REPO, PR, SHA, ["mergeable"]) == []
    assert len(sleeps) == 2 and len(fake.requests_to(rf"/pulls/{PR}$")) == 3


def test_mergeability_never_computed_is_unmet(fake, vcs, sleeps) -> None:
    fake.pulls[(REPO, PR)]["mergeable"] = None
    assert vcs.unmet_requirements(REPO, PR, SHA, ["mergeable"]) == [
        "`mergeable` not met: GitHub has not computed mergeability yet"]
    assert len(sleeps) == 3


@pytest.mark.parametrize(("mergeable", "state", "unmet"), [
    (False, "dirty", "the pull request has conflicts with main"),
    (True, "draft", "the pull request is a draft"),
    (True, "blocked", None),  # iac-ci's own pending status, usually
    (True, "behind", None),  # undiverged's business
    (True, "unstable", None),
])
def test_mergeable_states(fake, vcs, mergeable, state, unmet) -> None:
    fake.pulls[(REPO, PR)].update(mergeable=mergeable, mergeable_state=state)
    expected = [f"`mergeable` not met: {unmet}"] if unmet else []
    assert vcs.unmet_requirements(REPO, PR, SHA, ["mergeable"]) == expected


def test_undiverged_counts_the_commits_behind_the_base(fake, vcs) -> None:
    fake.compare[(REPO, "main", SHA)] = {"behind_by": 2, "ahead_by": 1, "files": ["a.tf"]}
    assert vcs.unmet_requirements(REPO, PR, SHA, ["undiverged"]) == ["`undiverged` not met: 2 commits behind main"]
    fake.compare[(REPO, "main", SHA)]["behind_by"] = 0
    assert vcs.unmet_requirements(REPO, PR, SHA, ["undiverged"]) == []


def test_undiverged_and_compare_files_from_a_real_repository(fake, vcs, tmp_path: Path) -> None:
    repo, _ = new_repo(tmp_path / "infra", {"main.tf": "a\n", "old.tf": "o\n"})
    git(repo, "checkout", "-q", "-b", "change")
    git(repo, "mv", "old.tf", "new.tf")
    head = commit_files(repo, {"net/vpc.tf": "v\n"}, "change")
    git(repo, "checkout", "-q", "main")
    commit_files(repo, {"main.tf": "b\n"}, "main moves on")
    fake.git_repos[REPO] = repo
    assert vcs.unmet_requirements(REPO, PR, head, ["undiverged"]) == ["`undiverged` not met: 1 commit behind main"]
    assert sorted(vcs.compare_files(REPO, "main", head) or []) == ["net/vpc.tf", "new.tf", "old.tf"]


def test_compare_files_at_githubs_cap_is_unknown(fake, vcs) -> None:
    fake.compare[(REPO, OLD_SHA, SHA)] = {"files": [f"f{i}.tf" for i in range(400)]}
    assert vcs.compare_files(REPO, OLD_SHA, SHA) is None
    fake.compare[(REPO, OLD_SHA, SHA)] = {"files": [f"f{i}.tf" for i in range(299)]}
    assert len(vcs.compare_files(REPO, OLD_SHA, SHA) or []) == 299


def test_checks_green_ignores_iac_ci_and_names_what_is_not_green(fake, vcs) -> None:
    vcs.set_status(REPO, SHA, "pending", "running", context="iac-ci/infra")
    fake.external_statuses[(REPO, SHA)] = [{"context": "ci/lint", "state": "success"}]
    fake.check_runs += [
        {"repo": REPO, "head_sha": SHA, "name": "docs", "status": "completed", "conclusion": "skipped"},
        {"repo": REPO, "head_sha": SHA, "name": "iac-ci/infra/apply", "status": "in_progress"},
    ]
    assert vcs.unmet_requirements(REPO, PR, SHA, ["checks_green"]) == []
    fake.external_statuses[(REPO, SHA)].append({"context": "ci/security", "state": "error"})
    fake.check_runs += [
        {"repo": REPO, "head_sha": SHA, "name": "build", "status": "in_progress"},
        {"repo": REPO, "head_sha": SHA, "name": "test", "status": "completed", "conclusion": "failure"},
    ]
    assert vcs.unmet_requirements(REPO, PR, SHA, ["checks_green"]) == [
        "`checks_green` not met: 2 failing (ci/security, test), 1 pending (build)"]


def test_every_requirement_at_once_and_an_unknown_one(fake, vcs) -> None:
    fake.reviews[(REPO, PR)] = [review("bob", "APPROVED")]
    fake.compare[(REPO, "main", SHA)] = {"behind_by": 0}
    assert vcs.unmet_requirements(REPO, PR, SHA, ["approved", "mergeable", "undiverged", "checks_green"]) == []
    assert len(fake.requests_to(rf"/pulls/{PR}$")) == 1  # the pull request is read once
    assert vcs.unmet_requirements(REPO, PR, SHA, ["frobnicate"]) == ["`frobnicate` not met: unknown requirement"]


# ---- changed files, reactions, URLs ---------------------------------------------------------
def test_changed_files_follow_pages_and_name_both_sides_of_a_rename(fake, vcs) -> None:
    listed: list[Any] = [f"mod{i:03d}/main.tf" for i in range(249)]
    listed.append({"filename": "net/new.tf", "previous_filename": "net/old.tf", "status": "renamed"})
    fake.pull_files[(REPO, PR)] = listed
    names = vcs.changed_files(REPO, PR)
    assert names is not None and len(names) == 251 and {"net/new.tf", "net/old.tf"} <= set(names)
    pages = fake.requests_to(rf"/pulls/{PR}/files")
    assert len(pages) == 3 and all("per_page=100" in r.path for r in pages)


def test_changed_files_at_githubs_cap_is_unknown(fake, vcs) -> None:
    fake.pull_files[(REPO, PR)] = [f"f{i}.tf" for i in range(3500)]
    assert vcs.changed_files(REPO, PR) is None


def test_react_acknowledges_a_command(fake, vcs) -> None:
    vcs.comment(REPO, PR, "/iac-ci plan")
    (command,) = fake.comments_on(REPO, PR)
    vcs.react(REPO, command["id"])
    vcs.react(REPO, command["id"], "rocket")
    assert fake.reactions == [{"repo": REPO, "comment_id": command["id"], "content": "eyes"},
                              {"repo": REPO, "comment_id": command["id"], "content": "rocket"}]


def test_pull_request_urls(fake) -> None:
    assert Vcs(settings(fake, github_api_url="https://api.github.com"), None).pull_request_url(  # type: ignore[arg-type]
        REPO, 60) == "https://github.com/acme/infra/pull/60"
    assert Vcs(settings(fake, github_api_url="https://ghe.example/api/v3/"), None).pull_request_url(  # type: ignore[arg-type]
        REPO, 60) == "https://ghe.example/acme/infra/pull/60"


# ---- folding older runs' comments -----------------------------------------------------------
def test_a_fourth_run_folds_the_oldest_and_each_comment_is_folded_once(fake, vcs) -> None:
    vcs.comment(REPO, PR, "a human's comment")
    for i in range(1, 4):
        vcs.run_started(summary(f"r{i}"))
        outcome = "failed" if i == 1 else "succeeded"
        vcs.run_finished(summary(f"r{i}", outcome, plan=outcome))
    assert not any(FOLDED_MARKER in c["body"] for c in run_comments(fake))
    vcs.run_started(summary("r4"))
    r1, r2, r3, r4 = run_comments(fake)
    assert r1["body"].startswith(marker("r1") + "\n" + FOLDED_MARKER + "\n")
    assert "<details><summary>❌ run r1 · failed (superseded)</summary>" in r1["body"]
    assert "| `plan` |" in r1["body"] and r1["body"].rstrip().endswith("</details>")
    assert not any(FOLDED_MARKER in c["body"] for c in (r2, r3, r4))
    edits = r1["edits"]
    vcs.run_started(summary("r5"))
    r1, r2, *_ = run_comments(fake)
    assert r1["edits"] == edits, "a folded comment is never folded again"
    assert "✅ run r2 · succeeded (superseded)" in r2["body"]
    assert [c["body"] for c in fake.comments_on(REPO, PR) if not c["body"].startswith("<!--")] == [
        "a human's comment"]
    vcs.run_finished(summary("r5", "succeeded"))  # the run still finds its own comment
    assert len(run_comments(fake)) == 5
