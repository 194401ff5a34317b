"""The PR summary comment stays under GitHub's limit however large the run, table first."""
from __future__ import annotations

from lambda_runtime.github.comment import (
    FOLDED_MARKER,
    GITHUB_COMMENT_LIMIT,
    brief,
    fold,
    is_folded,
    marker,
    render,
    run_id_of,
)

LOCK_REASON = "locked by [acme/infra#60](https://github.com/acme/infra/pull/60) until 2026-12-08 15:00 UTC"
BLOCK_REASON = "apply requirement `approved` not met: 0 of 1 approving reviews on the head commit"
LOG_URL = "https://ci.example/logs/r1?expires=1&sig=ab(c)"


def summary(n: int, tail_chars: int, status: str = "failed") -> dict:
    return {
        "run_id": "r1", "name": "big", "status": status, "commit": "a" * 40, "trace_id": "r1:1",
        "order_layers": [[f"o{i}" for i in range(n)]],
        "orders": {f"o{i}": {"status": "succeeded" if i % 3 else "failed", "target": "lambda", "exit_code": i % 3,
                              "duration_s": 1.5, "must_succeed": True, "log_tail": f"line {i}\n" + "x" * tail_chars}
                   for i in range(n)},
    }


def test_small_run_shows_everything() -> None:
    body = render(summary(3, 100), logs_url="https://ci.example/logs/r1?sig=x")
    assert body.startswith(marker("r1"))
    assert "| `o0` | ❌ failed | lambda | 1.5s | 0 |" in body
    assert body.count("<details>") == 3 and "line 2" in body
    assert body.endswith("\n\n[Full logs](https://ci.example/logs/r1?sig=x)")


def test_300_orders_with_10kb_logs_fit_and_list_every_order() -> None:
    body = render(summary(300, 10_000))
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert all(f"`o{i}`" in body for i in range(300))
    assert "<details>" in body  # some tails survive, shortened
    failed_first = body.index("<details>")
    assert "— failed" in body[failed_first: failed_first + 200]


def test_thousands_of_orders_still_fit() -> None:
    body = render(summary(3000, 10_000))
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert "o2999" in body


def test_fences_in_logs_cannot_break_out() -> None:
    s = summary(1, 0)
    s["orders"]["o0"]["log_tail"] = "````\n# injected heading\nhttps://user:pw@example.com/x"
    body = render(s)
    assert "````\n# injected" not in body and "user:pw" not in body


def gated_summary() -> dict:
    def order(status: str, **approval) -> dict:
        base = {"environment": "prod", "needed": 2, "approved_by": [], "wait_until": None, "rejected_by": None}
        return {"status": status, "target": "lambda", "must_succeed": True, "exit_code": None, "duration_s": None,
                "log_tail": "", "approval": {**base, **approval}}

    s = summary(1, 10, status="running")
    s["orders"] = {
        "deploy-prd": order("awaiting_approval", approved_by=["alice"]),
        "deploy-eu": order("rejected", rejected_by="bob"),
        "deploy-us": order("succeeded", approved_by=["alice", "bob"]),
        "plan": {"status": "succeeded", "target": "lambda", "must_succeed": True, "exit_code": 0, "duration_s": 2.0,
                 "log_tail": "ok"},
    }
    s["orders"]["deploy-eu"]["reason"] = "rejected by bob: the plan deletes the database"
    return s


def test_awaiting_orders_show_who_approved_and_who_may_approve() -> None:
    body = render(gated_summary(), reviewers={"prod": ["alice", "bob", "acme/sre"]})
    assert "| `deploy-prd` | ⏳ awaiting approval: 1 of 2 (alice) |" in body
    assert "**⏳ Awaiting approval (1)**" in body
    assert ("- `deploy-prd` (environment `prod`): awaiting approval: 1 of 2 (alice); reviewers: alice, bob, acme/sre"
            " — `/iac-ci approve deploy-prd`") in body


def test_rejected_orders_show_who_rejected_and_why() -> None:
    body = render(gated_summary())
    assert "| `deploy-eu` | 🛑 rejected by bob |" in body
    assert "**🛑 Rejected (1)**" in body
    assert "- `deploy-eu` (environment `prod`): rejected by bob: the plan deletes the database" in body


def test_approved_orders_name_their_approvers() -> None:
    body = render(gated_summary())
    assert "| `deploy-us` | ✅ succeeded (approved by alice, bob) |" in body
    assert "| `plan` | ✅ succeeded | lambda | 2.0s | 0 |" in body  # an order without rules is unchanged


def test_a_wait_timer_is_shown_in_utc() -> None:
    s = gated_summary()
    s["orders"]["deploy-prd"]["approval"].update(needed=0, approved_by=[], wait_until=1_800_000_000)
    assert "awaiting approval, timer until 2027-01-15 08:00 UTC" in render(s)


def test_without_reviewers_the_comment_says_who_may_approve() -> None:
    body = render(gated_summary())  # an untrusted PR's on_approval gate: no reviewers listed
    assert "reviewers: collaborators with write permission" in body


def test_names_cannot_break_the_table_or_the_lists() -> None:
    s = gated_summary()
    s["orders"]["deploy-prd"]["approval"]["approved_by"] = ["x|y`\n# z"]
    body = render(s, reviewers={"prod": ["a|b"]})
    assert "x/y' # z" in body and "reviewers: a/b" in body and "\n# z" not in body


def test_thousands_of_awaiting_orders_still_fit() -> None:
    s = gated_summary()
    waiting = s["orders"]["deploy-prd"]
    s["orders"] = {f"deploy-{i:04d}": waiting for i in range(3000)}
    body = render(s, reviewers={"prod": ["alice", "bob"]})
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert "… and 2960 more (`/iac-ci approve` approves them all)" in body


def outcome_summary(command: str | None = "apply") -> dict:
    s = summary(1, 10)
    s["orders"] = {
        "network": {"status": "succeeded", "target": "lambda", "log_tail": "ok"},
        "database": {"status": "locked", "target": "lambda", "reason": LOCK_REASON},
        "app": {"status": "blocked", "target": "lambda", "reason": BLOCK_REASON},
        "dns": {"status": "failed", "target": "lambda", "exit_code": 1, "log_tail": "boom"},
    }
    if command:
        s["command"] = command
    return s


def test_orders_keep_the_summary_order_which_is_execution_order() -> None:
    body = render(outcome_summary())
    rows = [body.index(f"| `{name}` |") for name in ("network", "database", "app", "dns")]
    assert rows == sorted(rows)


def test_locked_and_blocked_orders_are_listed_with_their_reasons_and_links_intact() -> None:
    body = render(outcome_summary())
    assert "**🔒 Locked (1)**\n- `database`: " + LOCK_REASON in body
    assert "[acme/infra#60](https://github.com/acme/infra/pull/60)" in body
    assert "**⛔ Blocked (1)**\n- `app`: apply requirement 'approved' not met: 0 of 1 approving reviews" in body
    assert "| `database` | 🔒 locked |" in body and "| `app` | ⛔ blocked |" in body


def test_reasons_cannot_break_the_list() -> None:
    s = outcome_summary()
    s["orders"]["database"]["reason"] = "held | by `x`\n# heading"
    body = render(s)
    assert "- `database`: held / by 'x' # heading" in body and "\n# heading" not in body


def test_a_long_reason_is_cut_before_a_link_rather_than_inside_it() -> None:
    s = outcome_summary()
    s["orders"]["database"]["reason"] = "x" * 280 + " " + LOCK_REASON
    line = next(ln for ln in render(s).split("\n") if ln.startswith("- `database`"))
    assert "[acme" not in line and line.endswith("…")


def test_the_command_is_in_the_header() -> None:
    assert "### ❌ iac-ci · `big` · apply · **failed**" in render(outcome_summary())
    assert "### ❌ iac-ci · `big` · **failed**" in render(outcome_summary(command=None))


def test_the_log_link_is_a_markdown_link_that_parentheses_cannot_end() -> None:
    body = render(outcome_summary(), logs_url=LOG_URL)
    assert "[Full logs](https://ci.example/logs/r1?expires=1&sig=ab%28c%29)" in body
    assert "Full logs" not in render(outcome_summary())


def test_thousands_of_locked_and_blocked_orders_with_long_reasons_still_fit() -> None:
    s = outcome_summary()
    s["orders"] = {f"{kind}-{i:04d}-" + "n" * 40: {"status": kind, "target": "lambda", "reason": LOCK_REASON * 5}
                   for i in range(1500) for kind in ("locked", "blocked", "rejected")}
    body = render(s, logs_url=LOG_URL)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert "**🔒 Locked (1500)**" in body and body.endswith(")")


def test_brief_says_why_a_run_failed() -> None:
    assert brief(outcome_summary()) == "1 failed, 1 locked, 1 blocked"
    ok = summary(3, 0, status="succeeded")
    for o in ok["orders"].values():
        o["status"] = "succeeded"
    assert brief(ok) == "succeeded: 3 succeeded"
    assert brief({"status": "failed", "orders": {}, "error": "no such bucket\nmore"}) == "failed: no such bucket"


def test_a_folded_comment_keeps_its_marker_and_is_recognised() -> None:
    body = render(outcome_summary())
    folded = fold(body)
    assert run_id_of(folded) == "r1" and is_folded(folded) and not is_folded(body)
    assert folded.split("\n")[1] == FOLDED_MARKER
    assert "<details><summary>❌ run r1 · failed (superseded)</summary>" in folded
    assert folded.rstrip().endswith("</details>") and "| `dns` |" in folded


def test_folding_a_full_comment_still_fits_and_closes_what_the_cut_opened() -> None:
    body = render(summary(300, 10_000))
    folded = fold(body)
    assert len(folded) <= GITHUB_COMMENT_LIMIT
    assert folded.count("<details>") == folded.count("</details>")
    assert folded.count("\n````") % 2 == 0


def test_other_comments_have_no_run() -> None:
    assert run_id_of("<!-- iac-ci:config:abc -->\nproblems") is None
    assert run_id_of("hello") is None
