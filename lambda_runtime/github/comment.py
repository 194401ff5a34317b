"""The pull-request summary comment: one per run, edited in place, never over GitHub's limit.

Budget rule: the header and the table of orders always appear; log tails share what is left
and shrink first; only when the table alone would not fit does it lose its columns, and as a
last resort orders are listed by name, grouped by status.

Orders whose environment has rules show who approved them; the header lists every order that
awaits approval (how many approvals of how many, by whom, who may give the rest and the command
to do it) and every rejected order (by whom and why).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from lambda_runtime.masking import redact_credentials
from lambda_runtime.schema.records import OrderView, RunSummary

GITHUB_COMMENT_LIMIT = 65536
MARKER_PREFIX = "<!-- iac-ci:run:"
MIN_TAIL_CHARS = 200
MAX_APPROVAL_LINES = 40
ICONS = {"succeeded": "✅", "failed": "❌", "timed_out": "⏱️", "cancelled": "🚫", "skipped": "⏭️", "running": "🔄",
         "queued": "⏳", "accepted": "⏳", "packaging": "📦", "awaiting_approval": "⏳", "rejected": "🛑"}

Orders = Mapping[str, OrderView]
Reviewers = Mapping[str, Sequence[str]]  # environment -> its reviewers entries


def marker(run_id: str) -> str:
    """The hidden first line that finds a run's comment again (from another process, after a restart)."""
    return f"{MARKER_PREFIX}{run_id} -->"


def render(summary: RunSummary, *, logs_location: str | None = None, limit: int = GITHUB_COMMENT_LIMIT,
           reviewers: Reviewers | None = None) -> str:
    """``reviewers``: each environment's reviewers entries (from the deployment policy), named
    next to the orders waiting for them."""
    orders: Orders = summary.get("orders", {})
    head = _header(summary) + _approvals(orders, reviewers or {})
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


def _approvals(orders: Orders, reviewers: Reviewers) -> str:
    """Orders awaiting approval and rejected ones, with who decided and who may still decide."""
    awaiting = [(n, o) for n, o in orders.items() if o.get("status") == "awaiting_approval"]
    rejected = [(n, o) for n, o in orders.items() if o.get("status") == "rejected"]
    if not awaiting and not rejected:
        return ""
    lines: list[str] = []
    if awaiting:
        lines.append(f"**⏳ Awaiting approval ({len(awaiting)})**")
        for name, o in awaiting[:MAX_APPROVAL_LINES]:
            a = o.get("approval")
            env = (a["environment"] if a else None) or "default"
            listed = ", ".join(reviewers.get(env, ())) or "collaborators with write permission"
            lines.append(f"- `{name}` (environment `{_clean_inline(env)}`): {_status_text(o)}; "
                         f"reviewers: {_clean_inline(listed)} — `/iac-ci approve {name}`")
        if len(awaiting) > MAX_APPROVAL_LINES:
            lines.append(f"- … and {len(awaiting) - MAX_APPROVAL_LINES} more (`/iac-ci approve` approves them all)")
    if rejected:
        lines.append(f"**🛑 Rejected ({len(rejected)})**")
        for name, o in rejected[:MAX_APPROVAL_LINES]:
            a = o.get("approval")
            env = (a["environment"] if a else None) or "default"
            who = a["rejected_by"] if a else None
            why = _clean_inline(str(o.get("reason") or f"rejected by {who}"))[:300]
            lines.append(f"- `{name}` (environment `{_clean_inline(env)}`): {why}")
        if len(rejected) > MAX_APPROVAL_LINES:
            lines.append(f"- … and {len(rejected) - MAX_APPROVAL_LINES} more")
    return "\n".join(lines) + "\n\n"


def _status_text(o: OrderView) -> str:
    """The status cell: the status, and for an order with rules who approved or rejected it."""
    st = str(o.get("status") or "")
    a = o.get("approval")
    if a is None:
        return st
    by = ", ".join(_clean_inline(b) for b in a.get("approved_by") or [])
    if st == "awaiting_approval":
        needed = a.get("needed") or 0
        text = "awaiting approval"
        if needed:
            text += f": {len(a.get('approved_by') or [])} of {needed}" + (f" ({by})" if by else "")
        until = a.get("wait_until")
        if until:
            text += f", timer until {_utc(float(until))}"
        return text
    if st == "rejected":
        return f"rejected by {_clean_inline(str(a.get('rejected_by') or '?'))}"
    return f"{st} (approved by {by})" if by else st


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _clean_inline(text: str) -> str:
    """A name inside a table cell or list line: no line breaks, pipes or backticks."""
    return text.replace("\n", " ").replace("|", "/").replace("`", "'")[:200]


def _duration(o: OrderView) -> str:
    d = o.get("duration_s")
    return "" if d is None else (f"{d:.0f}s" if d >= 10 else f"{d:.1f}s")


def _table(orders: Orders) -> str:
    rows = ["| order | status | target | duration | exit |", "|---|---|---|---|---|"]
    for name, o in orders.items():
        st = o.get("status") or ""
        tolerated = " (tolerated)" if st in ("failed", "timed_out") and o.get("must_succeed") is False else ""
        exit_code = o.get("exit_code")
        rows.append(f"| `{name}` | {ICONS.get(st, '')} {_status_text(o)}{tolerated} | {o.get('target') or ''} | "
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
