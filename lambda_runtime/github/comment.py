"""The pull-request summary comment: one per run, edited in place, never over GitHub's limit.

Budget rule: the header and the table of orders always appear; log tails share what is left
and shrink first; only when the table alone would not fit does it lose its columns, and as a
last resort orders are listed by name, grouped by status.

Orders appear in the order the summary lists them (execution order), so the table reads like
the run. Orders whose environment has rules show who approved them; the header lists every
order that awaits approval (how many approvals of how many, by whom, who may give the rest and
the command to do it), every rejected order (by whom and why), every order another pull request
holds the lock of (``locked``: by which one, until when) and every order an apply requirement
stopped (``blocked``: which one and why).

A pull request collects one comment per run; older runs' comments are folded (``fold``) so the
conversation stays readable, each exactly once (``FOLDED_MARKER``).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

from lambda_runtime.masking import redact_credentials
from lambda_runtime.schema.records import OrderView, RunSummary

GITHUB_COMMENT_LIMIT = 65536
OWN_CHECK_PREFIX = "iac-ci/"  # every status and check run iac-ci writes is named under it
MARKER_PREFIX = "<!-- iac-ci:run:"
FOLDED_MARKER = "<!-- iac-ci:folded -->"
MIN_TAIL_CHARS = 200
MAX_APPROVAL_LINES = 40
MAX_REASON_CHARS = 300
ICONS = {"succeeded": "✅", "failed": "❌", "timed_out": "⏱️", "cancelled": "🚫", "skipped": "⏭️", "running": "🔄",
         "queued": "⏳", "accepted": "⏳", "packaging": "📦", "awaiting_approval": "⏳", "rejected": "🛑",
         "locked": "🔒", "blocked": "⛔", "packaging_failed": "❌"}
# what a failed run's brief names first: the outcomes a reader has to act on
PROBLEM_STATUSES = ("failed", "timed_out", "locked", "blocked", "rejected", "cancelled")

Orders = Mapping[str, OrderView]
Reviewers = Mapping[str, Sequence[str]]  # environment -> its reviewers entries

_MARKER_LINE = re.compile(re.escape(MARKER_PREFIX) + r"(.+?) -->")
_HEADER_STATUS = re.compile(r"\*\*([a-z_]+)\*\*\s*$")


def marker(run_id: str) -> str:
    """The hidden first line that finds a run's comment again (from another process, after a restart)."""
    return f"{MARKER_PREFIX}{run_id} -->"


def render(summary: RunSummary, *, logs_url: str | None = None, limit: int = GITHUB_COMMENT_LIMIT,
           reviewers: Reviewers | None = None) -> str:
    """``logs_url``: the run's signed log link, when the deployment has one. ``reviewers``: each
    environment's reviewers entries (from the deployment policy), named next to the orders
    waiting for them."""
    orders: Orders = summary.get("orders", {})
    head = _header(summary) + _notices(orders, reviewers or {}, budget=limit // 3)
    foot = f"\n\n[Full logs]({_link_target(logs_url)})" if logs_url else ""
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


def brief(summary: RunSummary) -> str:
    """One line on how the run ended, for a commit status or a check run: for a failure why
    ("2 failed, 1 locked"), else the counts ("succeeded: 3 succeeded, 1 skipped")."""
    status = str(summary.get("status") or "accepted")
    counts = Counter(str(o.get("status")) for o in summary.get("orders", {}).values())
    if status == "succeeded":
        listed = ", ".join(f"{n} {_words(st)}" for st, n in counts.items())
        return f"succeeded: {listed}" if listed else "succeeded"
    problems = ", ".join(f"{counts[st]} {_words(st)}" for st in PROBLEM_STATUSES if counts.get(st))
    if problems:
        return problems
    error = str(summary.get("error") or "").strip().split("\n", 1)[0]
    return f"{_words(status)}: {error}" if error else _words(status)


def _words(status: str) -> str:
    return status.replace("_", " ")


def _link_target(url: str) -> str:
    """A URL as a markdown link target: a space or a parenthesis would end the link early."""
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _field(summary: RunSummary, key: str) -> object:
    """A summary field that older summaries (and older ``RunSummary`` versions) lack."""
    return cast(Mapping[str, object], summary).get(key)


def _header(summary: RunSummary) -> str:
    status = summary.get("status") or "accepted"
    command = _field(summary, "command")
    what = f" · {_clean_inline(str(command))}" if command else ""
    lines = [
        marker(str(summary.get("run_id"))),
        f"### {ICONS.get(status, '')} iac-ci · `{summary.get('name')}`{what} · **{status}**",
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


def _notices(orders: Orders, reviewers: Reviewers, *, budget: int) -> str:
    """The header's lists of orders a human should look at: awaiting approval, rejected, locked
    by another pull request, blocked by an apply requirement. Cut at whole lines to ``budget``
    characters, so a cut never leaves half a markdown link."""
    lines = _awaiting(orders, reviewers) + _rejected(orders)
    lines += _with_reasons(orders, "locked", "🔒 Locked", "locked by another pull request")
    lines += _with_reasons(orders, "blocked", "⛔ Blocked", "an apply requirement is not met")
    if not lines:
        return ""
    kept: list[str] = []
    used = 2
    for line in lines:
        if used + len(line) + 1 > budget - 60:
            kept.append("- … (lists cut at GitHub's size limit)")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept) + "\n\n"


def _awaiting(orders: Orders, reviewers: Reviewers) -> list[str]:
    awaiting = [(n, o) for n, o in orders.items() if o.get("status") == "awaiting_approval"]
    if not awaiting:
        return []
    lines = [f"**⏳ Awaiting approval ({len(awaiting)})**"]
    for name, o in awaiting[:MAX_APPROVAL_LINES]:
        a = o.get("approval")
        env = (a["environment"] if a else None) or "default"
        listed = ", ".join(reviewers.get(env, ())) or "collaborators with write permission"
        lines.append(f"- `{name}` (environment `{_clean_inline(env)}`): {_status_text(o)}; "
                     f"reviewers: {_clean_inline(listed)} — `/iac-ci approve {name}`")
    if len(awaiting) > MAX_APPROVAL_LINES:
        lines.append(f"- … and {len(awaiting) - MAX_APPROVAL_LINES} more (`/iac-ci approve` approves them all)")
    return lines


def _rejected(orders: Orders) -> list[str]:
    rejected = [(n, o) for n, o in orders.items() if o.get("status") == "rejected"]
    if not rejected:
        return []
    lines = [f"**🛑 Rejected ({len(rejected)})**"]
    for name, o in rejected[:MAX_APPROVAL_LINES]:
        a = o.get("approval")
        env = (a["environment"] if a else None) or "default"
        who = a["rejected_by"] if a else None
        why = _clean_inline(str(o.get("reason") or f"rejected by {who}"), MAX_REASON_CHARS)
        lines.append(f"- `{name}` (environment `{_clean_inline(env)}`): {why}")
    if len(rejected) > MAX_APPROVAL_LINES:
        lines.append(f"- … and {len(rejected) - MAX_APPROVAL_LINES} more")
    return lines


def _with_reasons(orders: Orders, status: str, title: str, fallback: str) -> list[str]:
    """``- `name`: reason`` for every order of ``status``; the reason may carry a markdown link
    (the pull request holding a lock), which ``_clean_inline`` leaves intact."""
    matching = [(n, o) for n, o in orders.items() if o.get("status") == status]
    if not matching:
        return []
    lines = [f"**{title} ({len(matching)})**"]
    lines += [f"- `{name}`: {_clean_inline(str(o.get('reason') or fallback), MAX_REASON_CHARS)}"
              for name, o in matching[:MAX_APPROVAL_LINES]]
    if len(matching) > MAX_APPROVAL_LINES:
        lines.append(f"- … and {len(matching) - MAX_APPROVAL_LINES} more")
    return lines


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


def _clean_inline(text: str, limit: int = 200) -> str:
    """A name or reason inside a table cell or list line: no line breaks, pipes or backticks.
    Brackets and parentheses stay, so a markdown link in a reason keeps working; a cut that
    would split such a link drops the partial link instead."""
    clean = text.replace("\r", " ").replace("\n", " ").replace("|", "/").replace("`", "'")
    if len(clean) <= limit:
        return clean
    cut = clean[:limit]
    opened = cut.rfind("[")
    if opened > cut.rfind(")"):
        cut = cut[:opened].rstrip()
    return cut + "…"


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


# ---- folding older runs' comments ---------------------------------------------------------
def run_id_of(body: str) -> str | None:
    """The run a comment belongs to, from its hidden first line; None for any other comment."""
    m = _MARKER_LINE.fullmatch(body.split("\n", 1)[0])
    return m[1] if m else None


def is_folded(body: str) -> bool:
    lines = body.split("\n", 2)
    return len(lines) > 1 and lines[1] == FOLDED_MARKER


def fold(body: str, *, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """A superseded run's comment collapsed into a ``<details>`` block: the run marker stays the
    first line (the run still finds its comment) and ``FOLDED_MARKER`` the second (it is folded
    once). The old body is cut to fit, closing a log fence the cut left open."""
    first, _, rest = body.partition("\n")
    run_id = run_id_of(body) or "?"
    header = next((line for line in rest.split("\n") if line.startswith("### ")), "")
    found = _HEADER_STATUS.search(header)
    status = found[1] if found else "unknown"
    opening = (f"{first}\n{FOLDED_MARKER}\n<details><summary>{ICONS.get(status, '')} run {run_id} · {status} "
               f"(superseded)</summary>\n\n")
    closing = "\n\n</details>\n"
    room = limit - len(opening) - len(closing)
    inner = rest.strip("\n")
    if len(inner) > room:
        inner = inner[: max(0, room - 40)] + "\n… (cut)"
        if inner.count("\n````") % 2:
            inner += "\n````"
        inner += "\n</details>" * max(0, inner.count("<details>") - inner.count("</details>"))
    return opening + inner + closing


def status_context(name: str, command: str | None) -> str:
    """``iac-ci/{name}`` for a plan (and a run without a command), ``iac-ci/{name}/apply`` for an
    apply: branch protection can require the two apart."""
    return f"{OWN_CHECK_PREFIX}{name}{'/apply' if command == 'apply' else ''}"
