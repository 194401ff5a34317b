"""Drift issues (``github.drift_issues``) kept by ``GitHubVcs.run_finished`` against the fake GitHub
over real HTTP: one issue per drifted (job, order), found again by its label and marker, commented
on while the drift stays, closed by a clean plan, reopened when the drift comes back, left alone
by a plan that failed, and never at the cost of the run's own status."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from github import GithubException
from support.fakes.github_server import FakeGitHub

from lambda_runtime.github.drift_issues import DRIFT_LABEL, ZWJ, issue_marker, run_marker
from lambda_runtime.github.provider import GitHubVcs, is_permanent
from lambda_runtime.settings import Settings

REPO = "acme/infra"
JOB = "nightly"
SHA = "c" * 40
SECRETS = {"gh-token": "ghp_" + "T" * 36}
# what a GitHub failure reaches the caller as: an answer, or PyGithub's retries spent on 5xx answers
FAILURES = (GithubException, requests.RequestException)


class Vcs(GitHubVcs):
    """The provider with its credentials from a dict instead of Secrets Manager."""

    def _secret(self, secret_id: str) -> str:
        return SECRETS[secret_id]


class Links:
    """A stand-in for ``intake.log_links.LogLinks`` that records what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    def for_run(self, run_id: str, order: str | None = None) -> str | None:
        self.asked.append((run_id, order))
        return f"https://ci.example/logs/{run_id}?order={order}&sig=s1"


def settings(fake: FakeGitHub) -> Settings:
    return Settings(orders_table="o", events_table="e", locks_table="l", idempotency_table="i", internal_bucket="b",
                    done_bucket="d", state_bucket="s", kms_key_arn="k", watchdog_arn="w", webhook_secret_id="api",
                    github_token_secret_id="gh-token", github_seconds_between_writes=0, github_api_url=fake.url)


@pytest.fixture()
def fake() -> Iterator[FakeGitHub]:
    server = FakeGitHub().start()
    yield server
    server.stop()


@pytest.fixture()
def links() -> Links:
    return Links()


@pytest.fixture()
def vcs(fake: FakeGitHub, links: Links) -> GitHubVcs:
    return Vcs(settings(fake), None, retry_total=1, sleep=lambda s: None, log_links=links)  # type: ignore[arg-type]


def summary(run_id: str, commit: str = SHA, **orders: str) -> dict[str, Any]:
    """A scheduled run of ``nightly`` whose orders (name=status) are drift plans."""
    statuses = orders or {"plan": "drifted"}
    return {
        "run_id": run_id, "status": "drifted" if "drifted" in statuses.values() else "succeeded", "name": JOB,
        "trace_id": f"{run_id}:1", "repo": REPO, "pr_number": None, "commit": commit, "vcs": "github",
        "installation_id": None, "trigger": "schedule", "created_at": time.time() - 60, "finished_at": time.time(),
        "orders": {name: {"status": st, "target": "lambda", "drift": True,
                          "exit_code": {"drifted": 2, "succeeded": 0}.get(st, 1),
                          "log_tail": f"# aws_s3_bucket.{name} will be updated in-place\n~ tags = {{}}\n",
                          "log_key": f"logs/{run_id}/{name}.log", "reason": None}
                   for name, st in statuses.items()},
    }


def drift_issues(fake: FakeGitHub, state: str = "all") -> list[dict[str, Any]]:
    return fake.issues_in(REPO, label=DRIFT_LABEL, state=state)


def comments(fake: FakeGitHub, number: int) -> list[str]:
    return [c["body"] for c in sorted(fake.comments_on(REPO, number), key=lambda c: c["id"])]


def writes(fake: FakeGitHub) -> list[str]:
    """The issue and label writes made, as ``METHOD path`` (statuses and reads left out)."""
    return [f"{r.method} {r.path}" for r in list(fake.requests)
            if r.method in ("POST", "PATCH") and ("/issues" in r.path or "/labels" in r.path)]


# ---- (1) a first drift opens one issue ---------------------------------------------------------
def test_a_drifted_order_opens_one_labelled_issue_with_its_marker(fake, vcs, links) -> None:
    vcs.run_finished(summary("r1"))
    (issue,) = drift_issues(fake)
    assert issue["state"] == "open" and issue["title"] == f"Drift detected: {JOB} / plan"
    assert [x["name"] for x in issue["labels"]] == [DRIFT_LABEL]
    body = issue["body"]
    assert body.startswith(issue_marker(JOB, "plan") + "\n" + run_marker("r1") + "\n")
    assert f"Commit: `{SHA[:12]}`" in body and "Run: `r1` (trigger `schedule`)" in body
    assert "aws_s3_bucket.plan will be updated in-place" in body and "<details>" in body
    assert "https://ci.example/logs/r1?order=plan&sig=s1" in body and ("r1", "plan") in links.asked
    assert "apply the code again" in body and "update the code" in body
    assert comments(fake, issue["number"]) == []
    # the label was made with its colour and description before the issue named it
    assert fake.labels[REPO][DRIFT_LABEL]["color"] == "d93f0b"
    assert writes(fake) == [f"POST /repos/{REPO}/labels", f"POST /repos/{REPO}/issues"]
    (status,) = fake.statuses  # the run's own status on its commit, as before
    assert status["sha"] == SHA and status["context"] == f"iac-ci/{JOB}"
    listing = fake.requests_to(r"/issues\?")
    assert listing and "labels=iac-ci-drift" in listing[0].path and "state=all" in listing[0].path


# ---- (2) the same run again changes nothing ------------------------------------------------------
def test_the_same_run_delivered_again_neither_opens_nor_comments(fake, vcs) -> None:
    vcs.run_finished(summary("r1"))
    before = writes(fake)
    vcs.run_finished(summary("r1"))
    vcs.run_finished(summary("r1"))
    (issue,) = drift_issues(fake)
    assert comments(fake, issue["number"]) == [] and writes(fake) == before


# ---- (3) drift that stays is a comment on the same issue ---------------------------------------------
def test_another_drifted_run_comments_once_on_the_open_issue(fake, vcs) -> None:
    vcs.run_finished(summary("r1"))
    vcs.run_finished(summary("r2", commit="d" * 40))
    vcs.run_finished(summary("r2", commit="d" * 40))  # delivered twice: still one comment
    (issue,) = drift_issues(fake)
    (comment,) = comments(fake, issue["number"])
    assert issue["state"] == "open" and comment.startswith(run_marker("r2") + "\n")
    assert "Still drifted" in comment and f"Commit: `{'d' * 12}`" in comment
    assert "<details>" in comment and "https://ci.example/logs/r2?order=plan" in comment
    # found again through the label's listing, its comments read only from before the run began
    since = fake.requests_to(rf"/issues/{issue['number']}/comments\?")
    assert since and all("since=" in r.path for r in since)


# ---- (4) a clean plan closes it ----------------------------------------------------------------
def test_a_clean_run_comments_and_closes_the_issue(fake, vcs) -> None:
    vcs.run_finished(summary("r1"))
    vcs.run_finished(summary("r2", commit="e" * 40, plan="succeeded"))
    (issue,) = drift_issues(fake)
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    (comment,) = comments(fake, issue["number"])
    assert comment.startswith(run_marker("r2")) and f"No drift in run `r2` at commit `{'e' * 12}`" in comment
    vcs.run_finished(summary("r2", commit="e" * 40, plan="succeeded"))  # again: nothing open, nothing to do
    vcs.run_finished(summary("r3", plan="succeeded"))
    assert len(comments(fake, issue["number"])) == 1
    assert fake.issues[(REPO, issue["number"])]["_patches"] == [{"state": "closed", "state_reason": "completed"}]


def test_a_clean_run_without_an_issue_writes_nothing(fake, vcs) -> None:
    vcs.run_finished(summary("r1", plan="succeeded"))
    assert drift_issues(fake) == [] and writes(fake) == []
    assert "state=open" in fake.requests_to(r"/issues\?")[0].path  # a clean plan only ever closes


# ---- (5) drift that comes back reopens the issue -----------------------------------------------------
def test_drift_that_comes_back_reopens_the_closed_issue(fake, vcs) -> None:
    vcs.run_finished(summary("r1"))
    vcs.run_finished(summary("r2", plan="succeeded"))
    vcs.run_finished(summary("r3"))
    (issue,) = drift_issues(fake)  # the same issue: one history per order, not one issue per episode
    assert issue["state"] == "open" and issue["state_reason"] == "reopened"
    clean, back = comments(fake, issue["number"])
    assert clean.startswith(run_marker("r2")) and back.startswith(run_marker("r3")) and "reopened" in back
    vcs.run_finished(summary("r3"))  # delivered again: not a second comment
    vcs.run_finished(summary("r2", plan="succeeded"))  # a late copy of the clean run: r3 spoke since
    assert len(comments(fake, issue["number"])) == 2 and drift_issues(fake, "open") == drift_issues(fake)


def test_a_replayed_drift_run_does_not_reopen_an_issue_closed_after_it(fake, vcs) -> None:
    vcs.run_finished(summary("r1"))
    vcs.run_finished(summary("r2", plan="succeeded"))
    vcs.run_finished(summary("r1"))
    (issue,) = drift_issues(fake)
    assert issue["state"] == "closed" and len(comments(fake, issue["number"])) == 1


def test_an_interrupted_close_is_finished_by_the_next_delivery(fake, vcs) -> None:
    vcs.run_finished(summary("r1"))
    number = drift_issues(fake)[0]["number"]
    with fake.failing("PATCH", rf"/issues/{number}$", 502), pytest.raises(GithubException):
        vcs.run_finished(summary("r2", plan="succeeded"))
    assert drift_issues(fake)[0]["state"] == "open" and len(comments(fake, number)) == 1  # commented, not closed
    vcs.run_finished(summary("r2", plan="succeeded"))
    assert drift_issues(fake)[0]["state"] == "closed" and len(comments(fake, number)) == 1


# ---- (6) one issue per order ---------------------------------------------------------------------
def test_two_drifted_orders_open_two_issues_and_each_is_kept_apart(fake, vcs) -> None:
    vcs.run_finished(summary("r1", network="drifted", **{"db[region=eu]": "drifted"}))
    issues = {i["title"]: i for i in drift_issues(fake)}
    assert set(issues) == {f"Drift detected: {JOB} / network", f"Drift detected: {JOB} / db[region=eu]"}
    assert issue_marker(JOB, "db[region=eu]") in issues[f"Drift detected: {JOB} / db[region=eu]"]["body"]
    assert writes(fake).count(f"POST /repos/{REPO}/labels") == 1  # the label once per run
    vcs.run_finished(summary("r2", network="succeeded", **{"db[region=eu]": "drifted"}))
    network, db = issues[f"Drift detected: {JOB} / network"], issues[f"Drift detected: {JOB} / db[region=eu]"]
    assert fake.issue(REPO, network["number"])["state"] == "closed"
    assert fake.issue(REPO, db["number"])["state"] == "open" and len(comments(fake, db["number"])) == 1
    assert len(drift_issues(fake)) == 2


def test_issues_of_other_jobs_pull_requests_and_unlabelled_issues_are_not_taken(fake, vcs) -> None:
    other = fake.add_issue(REPO, "Drift detected: weekly / plan", issue_marker("weekly", "plan"), labels=(DRIFT_LABEL,))
    unlabelled = fake.add_issue(REPO, "copied", issue_marker(JOB, "plan"))
    fake.pulls[(REPO, 3)] = {"title": "a PR quoting the marker", "body": issue_marker(JOB, "plan"), "state": "open",
                             "labels": [DRIFT_LABEL], "user": {"login": "bob", "id": 3}}
    vcs.run_finished(summary("r1"))
    mine = [i for i in drift_issues(fake) if i["number"] not in (other["number"],)]
    (issue,) = mine
    assert issue["number"] > max(3, other["number"], unlabelled["number"])  # PRs and issues share the numbers
    assert comments(fake, other["number"]) == comments(fake, unlabelled["number"]) == comments(fake, 3) == []


def test_a_duplicate_open_issue_is_closed_in_favour_of_the_oldest(fake, vcs) -> None:
    vcs.run_finished(summary("r1"))
    (first,) = drift_issues(fake)
    dup = fake.add_issue(REPO, first["title"], first["body"], labels=(DRIFT_LABEL,))  # a raced second creation
    vcs.run_finished(summary("r2"))
    assert fake.issue(REPO, first["number"])["state"] == "open" and len(comments(fake, first["number"])) == 1
    closed = fake.issue(REPO, dup["number"])
    assert closed["state"] == "closed" and closed["state_reason"] == "not_planned"
    assert f"Duplicate of #{first['number']}" in comments(fake, dup["number"])[0]
    assert len(drift_issues(fake, "open")) == 1 and issue_marker(JOB, "plan") not in closed["body"]
    vcs.run_finished(summary("r3", plan="succeeded"))
    vcs.run_finished(summary("r4"))  # the drift is back: the issue reopened is the first, never the duplicate
    assert fake.issue(REPO, first["number"])["state"] == "open"
    assert fake.issue(REPO, dup["number"])["state"] == "closed" and len(comments(fake, dup["number"])) == 1


# ---- (7) a failed plan says nothing about drift ----------------------------------------------------
@pytest.mark.parametrize("status", ["failed", "timed_out", "cancelled", "skipped"])
def test_an_order_that_did_not_finish_its_plan_leaves_the_issue_alone(fake, vcs, status) -> None:
    vcs.run_finished(summary("r1"))
    before, listings = writes(fake), len(fake.requests_to(r"/issues\?"))
    vcs.run_finished(summary("r2", plan=status))
    (issue,) = drift_issues(fake)
    assert issue["state"] == "open" and comments(fake, issue["number"]) == [] and writes(fake) == before
    assert len(fake.requests_to(r"/issues\?")) == listings  # not even listed: nothing to do for it


def test_runs_of_pull_requests_and_orders_without_drift_have_no_issues(fake, vcs) -> None:
    pr_run = {**summary("r1"), "pr_number": 7, "command": "plan"}
    vcs.run_finished(pr_run)  # a pull request's plan shows its own changes, not drift
    plain = summary("r2")
    plain["orders"]["plan"].pop("drift")
    vcs.run_finished(plain)
    assert drift_issues(fake) == [] and not fake.requests_to(r"/issues\?")


# ---- (8) GitHub's failures cost the issue, never the run's status --------------------------------
def test_a_500_on_issue_creation_still_writes_the_runs_status(fake, vcs) -> None:
    with fake.failing("POST", rf"/repos/{REPO}/issues$", 500), pytest.raises(FAILURES) as raised:
        vcs.run_finished(summary("r1"))
    assert not is_permanent(raised.value)  # raised once everything was attempted, for notify to log
    (status,) = fake.statuses
    assert status["sha"] == SHA and status["context"] == f"iac-ci/{JOB}"
    assert drift_issues(fake) == []
    vcs.run_finished(summary("r1"))  # the run delivered again once GitHub answers: the issue appears, once
    assert len(drift_issues(fake)) == 1 and len(fake.statuses) == 2


def test_a_500_on_one_order_still_keeps_the_other_orders_issue(fake, vcs) -> None:
    vcs.run_finished(summary("r1", a="drifted"))
    number = drift_issues(fake)[0]["number"]
    with fake.failing("POST", rf"/issues/{number}/comments$", 500), pytest.raises(FAILURES):
        vcs.run_finished(summary("r2", a="drifted", b="drifted"))
    assert {i["title"] for i in drift_issues(fake)} == {f"Drift detected: {JOB} / a", f"Drift detected: {JOB} / b"}


def test_a_failing_issue_listing_still_writes_the_runs_status(fake, vcs) -> None:
    with fake.failing("GET", rf"/repos/{REPO}/issues$", 502), pytest.raises(FAILURES):
        vcs.run_finished(summary("r1"))
    assert len(fake.statuses) == 1 and drift_issues(fake) == []


def test_issues_disabled_is_no_failure(fake, vcs) -> None:
    with fake.failing("POST", rf"/repos/{REPO}/issues$", 410):
        vcs.run_finished(summary("r1"))  # 410 Gone: the repository turned its issues off
    assert drift_issues(fake) == [] and len(fake.statuses) == 1


# ---- the text ------------------------------------------------------------------------------------
def test_the_log_tail_is_cut_masked_of_url_credentials_and_mentions_nobody(fake, vcs) -> None:
    doc = summary("r1")
    doc["orders"]["plan"]["log_tail"] = ("x" * 100_000 + "\n@octocat and @acme/admins: see "
                                         "https://bot:hunter2@git.example/r ```` fence\n")
    vcs.run_finished(doc)
    (issue,) = drift_issues(fake)
    body = issue["body"]
    assert len(body) < 20_000 and "(last 16,000 characters)" in body
    assert "@octocat" not in body and f"@{ZWJ}octocat" in body and f"@{ZWJ}acme/admins" in body
    assert "hunter2" not in body and "\n````\n</details>" in body and body.count("````") == 2
