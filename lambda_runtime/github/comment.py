"""The pull-request summary comment: one per run, edited in place, never over GitHub's limit.

Budget rule: the header and the table of orders always appear; log tails share what is left
and shrink first; only when the table alone would not fit does it lose its columns, and as a
last resort orders are listed by name, grouped by status.
"""
from __future__ import annotations

from collections.abc import Mapping

from lambda_runtime.masking import redact_credentials
from lambda_runtime.schema.records import OrderView, RunSummary

GITHUB_COMMENT_LIMIT = 65536
MARKER_PREFIX = "<!-- iac-ci:run:"
MIN_TAIL_CHARS = 200
ICONS = {"succeeded": "✅", "failed": "❌", "timed_out": "⏱️", "cancelled": "🚫", "skipped": "⏭️", "running": "🔄",
         "queued": "⏳", "accepted": "⏳", "packaging": "📦"}

Orders = Mapping[str, OrderView]


def marker(run_id: str) -> str:
    """The hidden first line that finds a run's comment again (from another process, after a restart)."""
    return f"{MARKER_PREFIX}{run_id} -->"


def render(summary: RunSummary, *, logs_location: str | None = None, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    orders: Orders = summary.get("orders", {})
    head = _header(summary)
    foot = f"\n\nFull logs: `{logs_location}`" if logs_location else ""
    for table in (_table(orders), _compact_table(orders), _names_by_status(orders)):
        fixed = len(head) + len(table) + len(foot)
        if fixed <= limit:
            break
    else:
        table = table[: max(0, limit - len(head) - len(foot) - 40)] + "\n… (list cut at GitHub's size limit)"
        fixed = len(head) + len(table) + len(foot)
    tails = _tails(orders, budget=limit - fixed)
    body = head + table + tails + foot
    assert len(body) <= limit, len(body)
    return body


def _header(summary: RunSummary) -> str:
    status = summary.get("status") or "accepted"
    lines = [
        marker(str(summary.get("run_id"))),
        f"### {ICONS.get(status, '')} iac-ci · `{summary.get('name')}` · **{status}**",
        "",
        f"Run `{summary.get('run_id')}` · commit `{str(summary.get('commit') or '')[:12]}` · "
        f"trace `{summary.get('trace_id')}`",
    ]
    error = summary.get("error")
    if error:
        lines += ["", "> " + _clean(str(error))[:2000].replace("\n", "\n> ")]
    layers = summary.get("order_layers") or []
    if layers and sum(len(layer) for layer in layers) <= 200:
        lines += ["", "**Order of execution:** " + " → ".join(", ".join(f"`{n}`" for n in layer) for layer in layers)]
    return "\n".join(lines) + "\n\n"


def _duration(o: OrderView) -> str:
    d = o.get("duration_s")
    return "" if d is None else (f"{d:.0f}s" if d >= 10 else f"{d:.1f}s")


def _table(orders: Orders) -> str:
    rows = ["| order | status | target | duration | exit |", "|---|---|---|---|---|"]
    for name, o in orders.items():
        st = o.get("status") or ""
        tolerated = " (tolerated)" if st in ("failed", "timed_out") and o.get("must_succeed") is False else ""
        exit_code = o.get("exit_code")
        rows.append(f"| `{name}` | {ICONS.get(st, '')} {st}{tolerated} | {o.get('target') or ''} | "
                    f"{_duration(o)} | {'' if exit_code is None else str(exit_code)} |")
    return "\n".join(rows) + "\n"


def _compact_table(orders: Orders) -> str:
    rows = ["| order | status |", "|---|---|"]
    rows += [f"| {name} | {o.get('status')} |" for name, o in orders.items()]
    return "\n".join(rows) + "\n"


def _names_by_status(orders: Orders) -> str:
    groups: dict[str, list[str]] = {}
    for name, o in orders.items():
        groups.setdefault(str(o.get("status")), []).append(name)
    return "\n".join(f"**{st}** ({len(ns)}): " + ", ".join(ns) for st, ns in groups.items()) + "\n"


def _tails(orders: Orders, *, budget: int) -> str:
    """Log tails of finished orders, failures first; as many as fit with at least MIN_TAIL_CHARS each."""
    finished = [(n, o) for n, o in orders.items() if o.get("log_tail") and o.get("status") not in ("queued", "running")]
    finished.sort(key=lambda item: item[1].get("status") == "succeeded")  # stable: failures first
    overhead = len("\n<details><summary><code></code> — </summary>\n\n````text\n\n````\n</details>\n") + 16
    out: list[str] = []
    remaining = budget - 2
    shown = min(len(finished), max(0, remaining // (MIN_TAIL_CHARS + overhead + 64)))
    for i, (name, o) in enumerate(finished[:shown]):
        block_budget = remaining // (shown - i)
        share = block_budget - overhead - len(name) - len(str(o.get("status")))
        if share < MIN_TAIL_CHARS:
            break
        tail = _clean(o["log_tail"][-share:])[-share:]
        block = (f"\n<details><summary><code>{name}</code> — {o.get('status')}</summary>\n\n````text\n{tail}\n````\n"
                 f"</details>\n")
        out.append(block)
        remaining -= len(block)
    return "".join(out)


def _clean(text: str) -> str:
    """Logs are masked by the worker already; credentials in URLs are stripped again here, and
    fence markers cannot break out of the code block."""
    return redact_credentials(text).replace("````", "`\u200b```")
