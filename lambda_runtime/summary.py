"""The run summary (``schema.records.RunSummary``) built from a snapshot: one shape for the done
object, the job_completed event, PR comments and ``iac-ci run --json``."""

from __future__ import annotations

from lambda_runtime.job.dag import layers
from lambda_runtime.schema.records import OrderRecord, OrderView, RunRecord, RunSnapshot, RunSummary


def order_view(order: OrderRecord) -> OrderView:
    started, finished = order.started_at, order.finished_at
    duration = round(finished - started, 3) if started is not None and finished is not None else None
    view: OrderView = {
        "status": order.status.value,
        "target": order.target,
        "must_succeed": order.must_succeed,
        "exit_code": order.exit_code,
        "duration_s": duration,
        "log_tail": order.log_tail,
        "log_key": order.log_key,
        "reason": order.reason,
    }
    if order.drift:
        view["drift"] = True
    if order.run_if != "success":
        view["run_if"] = order.run_if
    if order.gated:
        view["approval"] = {
            "environment": order.environment,
            "needed": order.approvals_needed,
            "approved_by": [str(a.get("by")) for a in order.approvals],
            "wait_until": order.wait_until if order.wait_seconds and order.awaiting_since else None,
            "rejected_by": str(order.rejection.get("by")) if order.rejection else None,
        }
    return view


def run_summary(snap: RunSnapshot, *, status: str | None = None) -> RunSummary:
    run = snap.run or RunRecord(run_id="")
    deps = {n: o.depends_on for n, o in snap.orders.items()}
    order_layers = layers(deps) if deps else []
    position = {n: i for i, layer in enumerate(order_layers) for n in layer}
    in_order = sorted(snap.orders.items(), key=lambda item: (position.get(item[0], len(order_layers)), item[0]))
    return {
        "run_id": run.run_id,
        "status": status or run.status.value,
        "name": run.name,
        "trace_id": run.trace_id,
        "flow_id": run.flow_id,
        "repo": run.repo,
        "pr_number": run.pr_number,
        "commit": run.commit,
        "vcs": run.vcs,
        "installation_id": run.installation_id,
        "created_at": run.created_at,
        "error": run.packaging_error,
        "command": run.command,
        "trigger": run.trigger,
        "pr_url": run.pr_url,
        "plan_run_id": run.plan_run_id,
        "upstream_run_id": run.upstream_run_id,
        "upstream_job": run.upstream_job,
        **({"params": dict(run.params)} if run.params else {}),
        "order_layers": order_layers,
        # in execution order (layer by layer, by name within one): how the PR comment lists them
        "orders": {n: order_view(o) for n, o in in_order},
    }
