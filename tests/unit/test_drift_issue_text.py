"""The text of drift issues and which runs have any: markers that find an issue and a run's word
again, tails cut far under GitHub's limit, nobody mentioned, pull requests' runs left out."""
from __future__ import annotations

from typing import Any

import pytest

from lambda_runtime.github.comment import GITHUB_COMMENT_LIMIT
from lambda_runtime.github.drift_issues import (
    TAIL_LIMIT,
    ZWJ,
    clean_comment,
    drift_comment,
    drift_orders,
    escape_mentions,
    issue_marker,
    opening_body,
    run_ids,
    run_marker,
    tail_block,
    title,
    wanted,
)

AT = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def summary(**orders: Any) -> dict[str, Any]:
    return {"run_id": "r1", "name": "nightly", "repo": "acme/infra", "vcs": "github", "commit": "f" * 40,
            "trigger": "schedule", "orders": orders}


def view(status: str = "drifted", tail: str = "~ tags", **extra: Any) -> dict[str, Any]:
    return {"status": status, "drift": True, "exit_code": 2, "log_tail": tail, "target": "lambda", **extra}


def test_markers_name_the_order_exactly_and_runs_are_read_back_in_order() -> None:
    assert issue_marker("nightly", "plan") == "<!-- iac-ci:drift:nightly/plan -->"
    assert issue_marker("nightly", "plan") not in issue_marker("nightly", "plan-eu")
    assert issue_marker("nightly", "db[region=eu]") == "<!-- iac-ci:drift:nightly/db[region=eu] -->"
    assert "-->" not in issue_marker("a-->b", "x")[:-3]  # nothing ends the comment early
    text = f"{run_marker('r1')}\nbody\n{run_marker('r2')}"
    assert run_ids(text) == ["r1", "r2"] and run_ids("") == []


def test_wanted_only_for_github_runs_of_a_repository_with_a_drift_order_that_finished_its_plan() -> None:
    assert wanted(summary(plan=view()))
    assert wanted(summary(plan=view("succeeded")))
    assert not wanted(summary(plan=view("failed")))
    assert not wanted(summary(plan={**view(), "drift": False}))
    assert not wanted({**summary(plan=view()), "pr_number": 7})  # a pull request's plan shows its own changes
    assert not wanted({**summary(plan=view()), "vcs": None}) and not wanted({**summary(plan=view()), "repo": None})
    assert list(drift_orders(summary(a=view(), b=view("timed_out"), c=view("succeeded")))) == ["a", "c"]


def test_the_opening_body_says_what_drifted_how_to_fix_it_and_carries_both_markers() -> None:
    doc = summary(plan=view())
    body = opening_body(doc, "plan", doc["orders"]["plan"], logs_url="https://ci.example/l (1)", at=AT)
    first, second, *_ = body.split("\n")
    assert first == issue_marker("nightly", "plan") and second == run_marker("r1")
    assert "exited 2" in body and "apply the code again" in body and "update the code" in body
    assert "Commit: `ffffffffffff`" in body and "2026-01-01 00:00 UTC" in body
    assert "[Full logs](https://ci.example/l%20%281%29)" in body
    assert title("nightly", "plan") == "Drift detected: nightly / plan"


def test_comments_carry_the_run_marker_first() -> None:
    doc = summary(plan=view())
    still = drift_comment(doc, "plan", doc["orders"]["plan"], logs_url=None, at=AT)
    back = drift_comment(doc, "plan", doc["orders"]["plan"], logs_url=None, at=AT, reopened=True)
    clean = clean_comment(doc, "plan", at=AT)
    assert all(text.startswith(run_marker("r1") + "\n") for text in (still, back, clean))
    assert "Still drifted" in still and "reopened" in back and "Full logs" not in still
    assert "No drift in run `r1` at commit `ffffffffffff`" in clean


@pytest.mark.parametrize("size", [10, TAIL_LIMIT, 1_000_000])
def test_a_tail_of_any_size_stays_far_under_githubs_limit(size: int) -> None:
    doc = summary(plan=view(tail="y" * size))
    body = opening_body(doc, "plan", doc["orders"]["plan"], logs_url=None, at=AT)
    assert len(body) < GITHUB_COMMENT_LIMIT // 3
    assert ("last 16,000 characters" in body) == (size > TAIL_LIMIT)


def test_a_tail_mentions_nobody_keeps_its_fence_and_loses_url_credentials() -> None:
    block = tail_block("ping @octocat and @acme/ops\n```` break out\nhttps://u:s3cret@git.example/x\n")
    assert "@octocat" not in block and f"@{ZWJ}octocat" in block and f"@{ZWJ}acme/ops" in block
    assert block.count("````") == 2 and "s3cret" not in block
    assert tail_block("") == tail_block(None) == tail_block("  \n") == ""
    assert escape_mentions("a@b") == f"a@{ZWJ}b"
