"""The PR summary comment stays under GitHub's limit however large the run, table first."""
from __future__ import annotations

from lambda_runtime.github.comment import GITHUB_COMMENT_LIMIT, marker, render


def summary(n: int, tail_chars: int, status: str = "failed") -> dict:
    return {
        "run_id": "r1", "name": "big", "status": status, "commit": "a" * 40, "trace_id": "r1:1",
        "order_layers": [[f"o{i}" for i in range(n)]],
        "orders": {f"o{i}": {"status": "succeeded" if i % 3 else "failed", "target": "lambda", "exit_code": i % 3,
                              "duration_s": 1.5, "must_succeed": True, "log_tail": f"line {i}\n" + "x" * tail_chars}
                   for i in range(n)},
    }


def test_small_run_shows_everything() -> None:
    body = render(summary(3, 100), logs_location="s3://b/runs/r1/")
    assert body.startswith(marker("r1"))
    assert "| `o0` | ❌ failed | lambda | 1.5s | 0 |" in body
    assert body.count("<details>") == 3 and "line 2" in body and "Full logs: `s3://b/runs/r1/`" in body


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
