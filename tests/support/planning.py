"""A running run's snapshot built from a parsed job, for planner tables: every order's record as
packaging stores it (dependencies, run_if, drift, matrix group, fail_fast), in the given statuses."""
from __future__ import annotations

from lambda_runtime.job.model import Job
from lambda_runtime.schema.records import OrderRecord, RunRecord, RunSnapshot
from lambda_runtime.schema.status import OrderStatus, RunStatus


def running_snapshot(job: Job, status: dict[str, OrderStatus], now: float) -> RunSnapshot:
    """Orders not in ``status`` are queued; the others started five seconds before ``now``."""
    run = RunRecord(run_id="r1", status=RunStatus.RUNNING, trace_id="r1:1", deadline=now + 3600)
    orders = {}
    for o in job.orders:
        st = status.get(o.name, OrderStatus.QUEUED)
        queued = st is OrderStatus.QUEUED
        orders[o.name] = OrderRecord(
            name=o.name, status=st, depends_on=tuple(o.depends_on), must_succeed=o.must_succeed, run_if=o.run_if,
            drift=o.drift, group=o.group, fail_fast=o.fail_fast, timeout=60, watchdog="arn:x",
            attempt=0 if queued else 1, dispatched_at=None if queued else now - 5)
    return RunSnapshot(run, orders)
