"""Live progress on stderr: a table of orders with status and elapsed time."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

STYLE = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "timed_out": "magenta",
    "skipped": "yellow",
    "cancelled": "yellow",
    "awaiting_approval": "bold yellow",
    "rejected": "red",
}


def status_cell(order: dict[str, Any]) -> str:
    """The status, with who approved and how many are needed for an order that waits for reviewers."""
    st = order.get("status") or "?"
    text = f"[{STYLE[st]}]{st}[/]" if st in STYLE else escape(st)
    approval = order.get("approval")
    if approval and st == "awaiting_approval":
        text += f" ({len(approval.get('approved_by') or [])}/{approval.get('needed')})"
    elif approval and approval.get("rejected_by"):
        text += " by " + escape(str(approval["rejected_by"]))
    return text


def orders_table(summary: dict[str, Any], *, title: str | None = None, now: float | None = None) -> Table:
    table = Table(title=title, expand=False)
    for col in ("order", "target", "status", "exit", "time"):
        table.add_column(col)
    now = now or time.time()
    for name, o in summary.get("orders", {}).items():
        dur = o.get("duration_s")
        table.add_row(
            escape(name),
            o.get("target") or "",
            status_cell(o),
            "" if o.get("exit_code") is None else str(o["exit_code"]),
            "" if dur is None else f"{dur:.1f}s",
        )
    return table


class Progress:
    def __init__(self, console: Console, run_id: str, enabled: bool = True):
        self._console = console
        self._run_id = run_id
        self._live = Live(console=console, refresh_per_second=4, transient=False) if enabled else None

    def __enter__(self) -> Progress:
        if self._live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            self._live.__exit__(None, None, None)

    def update(self, summary: dict[str, Any]) -> None:
        if self._live:
            counts: dict[str, int] = {}
            for o in summary.get("orders", {}).values():
                counts[o.get("status")] = counts.get(o.get("status"), 0) + 1
            title = f"run {self._run_id} — {summary.get('status')} — " + ", ".join(
                f"{v} {k}" for k, v in sorted(counts.items())
            )
            self._live.update(orders_table(summary, title=title))
