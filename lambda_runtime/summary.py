"""The run summary: one shape for the done object, the job_completed event, PR comments and
``iac-ci run --json``."""

from __future__ import annotations

from typing import Any

from lambda_runtime.job.dag import layers
from lambda_runtime.store.runs import RunSnapshot


def order_view(item: dict[str, Any]) -> dict[str, Any]:
    started, finished = item.get("started_at"), item.get("finished_at")
    duration = (
        round(finished - started, 3)
        if isinstance(started, (int, float)) and isinstance(finished, (int, float))
        else None
    )
    return {
        "status": item.get("status"),
        "target": item.get("target"),
        "must_succeed": item.get("must_succeed", True),
        "exit_code": item.get("exit_code"),
        "duration_s": duration,
        "log_tail": item.get("log_tail", ""),
        "log_key": item.get("log_key"),
        "reason": item.get("reason"),
    }


def run_summary(snap: RunSnapshot, *, status: str | None = None) -> dict[str, Any]:
    run = snap.run or {}
    deps = {n: tuple(o.get("depends_on", [])) for n, o in snap.orders.items()}
    return {
        "run_id": run.get("run_id"),
        "status": status or run.get("status"),
        "name": run.get("name"),
        "trace_id": run.get("trace_id"),
        "flow_id": run.get("flow_id"),
        "repo": run.get("repo"),
        "pr_number": run.get("pr_number"),
        "commit": run.get("commit"),
        "vcs": run.get("vcs"),
        "installation_id": run.get("installation_id"),
        "created_at": run.get("created_at"),
        "error": run.get("packaging_error"),
        "order_layers": layers(deps) if deps else [],
        "orders": {n: order_view(o) for n, o in sorted(snap.orders.items())},
    }
