"""The properties every fault scenario must keep, checked in one place.

1. The run reaches a terminal state: its done object exists, the run item is ``finalized`` with
   the same status, and every order is in a terminal status (the same in the store and in the
   done object).
2. No order executes more than once: counted both where the engine dispatches
   (``dispatcher.dispatched``, plus dispatches a test wrapper swallowed) and where the commands
   actually run (each order's first command appends a line to an execution log on the host).
3. No callback is lost: an order that was dispatched has a result object, written exactly once
   (one S3 version), and the order's status is that result's status; an order without a result
   was never run (skipped, cancelled, or lost before dispatch and reported by the watchdog).
4. The done object is written exactly once: one S3 version, and ETag/LastModified unchanged
   after late duplicate notifications and extra wake-ups; exactly one ``job_completed`` event;
   exactly one terminal event per order, and at most one ``order_running``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.schema import layout
from lambda_runtime.schema.status import OrderStatus, RunStatus
from support.faults.chaos import resend_callbacks, wait_queue_drained

EXEC_ENV = "FAULTS_EXEC_LOG"
RECORD_EXECUTION = f'printf "%s %s %s\\n" "$IAC_CI_RUN_ID" "$IAC_CI_ORDER" "$$" >> "${EXEC_ENV}"'
RESULT_STATUSES = {OrderStatus.SUCCEEDED.value, OrderStatus.FAILED.value, OrderStatus.TIMED_OUT.value}


def counted_job(name: str, orders: list[dict[str, Any]], exec_log: Path, **job: Any) -> dict[str, Any]:
    """A job whose every order first records its execution in ``exec_log`` (host file, O_APPEND)."""
    return {
        "name": name,
        "username": "faults",
        "env": {EXEC_ENV: str(exec_log)},
        **job,
        "orders": [{**o, "cmds": [RECORD_EXECUTION, *o["cmds"]]} for o in orders],
    }


def chain(n: int, *, prefix: str = "o", target: str = "lambda", cmds: list[str] | None = None) -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}{i}", "target": target, "cmds": cmds or ["true"],
         "depends_on": [f"{prefix}{i - 1}"] if i else []}
        for i in range(n)
    ]


def diamond(*, target: str = "lambda", width: int = 3) -> list[dict[str, Any]]:
    """top -> width parallel middles -> bottom, plus one independent order."""
    mids = [f"mid{i}" for i in range(width)]
    return [
        {"name": "top", "target": target, "cmds": ["true"]},
        *({"name": m, "target": target, "cmds": ["true"], "depends_on": ["top"]} for m in mids),
        {"name": "bottom", "target": "codebuild", "cmds": ["true"], "depends_on": mids},
        {"name": "free", "target": "codebuild", "cmds": ["true"]},
    ]


def executions(exec_log: Path, run_id: str) -> Counter:
    if not exec_log.exists():
        return Counter()
    out: Counter = Counter()
    for line in exec_log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == run_id:
            out[parts[1]] += 1
    return out


@dataclass
class Evidence:
    run_id: str
    done: dict[str, Any]
    statuses: dict[str, str]
    results: dict[str, dict[str, Any]]
    executions: Counter
    dispatched: Counter
    events: list[dict[str, Any]] = field(default_factory=list)


def _versions(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    resp = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in resp.get("Versions", []) if v["Key"] == key]


def enable_versioning(stack: EmbeddedStack) -> None:
    """Every write to the done and internal buckets leaves a version: 'written once' becomes countable."""
    s3 = AwsClients(region=stack.aws.region).s3
    for bucket in (stack.settings.done_bucket, stack.settings.internal_bucket):
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def check_run(
    stack: EmbeddedStack,
    run_id: str,
    exec_log: Path,
    *,
    timeout: float = 90,
    extra_dispatches: Counter | None = None,
    extra_wakes: int = 3,
) -> Evidence:
    """Wait for the run, then assert every invariant; returns what was observed for further checks."""
    done = stack.wait(run_id, timeout=timeout)
    wait_queue_drained(stack)
    _wait_workers_gone(stack)
    s3 = AwsClients(region=stack.aws.region).s3  # a client without any injected faults
    done_key = layout.done_key(run_id)
    head = s3.head_object(Bucket=stack.settings.done_bucket, Key=done_key)

    # 4. late duplicates of every notification and extra wake-ups change nothing
    resend_callbacks(stack, run_id)
    for _ in range(extra_wakes):
        assert stack.orchestrator.wake(run_id) in ("evaluated", "deferred"), "a late wake-up failed"
    wait_queue_drained(stack)
    again = s3.head_object(Bucket=stack.settings.done_bucket, Key=done_key)
    assert (again["ETag"], again["LastModified"]) == (head["ETag"], head["LastModified"]), "done object rewritten"
    done_versions = _versions(s3, stack.settings.done_bucket, done_key)
    assert len(done_versions) == 1, f"done object written {len(done_versions)} times"
    assert json.loads(s3.get_object(Bucket=stack.settings.done_bucket, Key=done_key)["Body"].read()) == done

    events = stack.store.events(run_id)
    completed = [e for e in events if e["event_type"] == "job_completed"]
    assert len(completed) == 1, f"{len(completed)} job_completed events"

    # 1. terminal everywhere, and the same everywhere
    assert RunStatus(done["status"]).terminal, done["status"]
    snap = stack.store.load(run_id)
    assert snap.run is not None and snap.run.finalized is True, snap.run
    assert snap.run.status == done["status"]
    statuses = {n: o["status"] for n, o in done["orders"].items()}
    assert statuses == {n: o.status for n, o in snap.orders.items()}, "done object and store disagree"
    assert all(OrderStatus(s).terminal for s in statuses.values()), statuses

    # 2. at most once, counted at dispatch and at execution
    ran = executions(exec_log, run_id)
    dispatched = Counter(o for r, o, _ in stack.dispatcher.dispatched if r == run_id)
    dispatched.update(extra_dispatches or Counter())
    assert all(c == 1 for c in ran.values()), f"orders executed more than once: {ran}"
    assert all(c == 1 for c in dispatched.values()), f"orders dispatched more than once: {dispatched}"
    assert set(ran) <= set(dispatched), f"executions without a dispatch: {set(ran) - set(dispatched)}"

    # 3. no lost callback: results written once, and the order's status is its result's
    results: dict[str, dict[str, Any]] = {}
    for name, status in statuses.items():
        key = layout.result_key(run_id, name)
        versions = _versions(s3, stack.settings.internal_bucket, key)
        assert len(versions) <= 1, f"result of {name} written {len(versions)} times"
        if versions:
            results[name] = json.loads(s3.get_object(Bucket=stack.settings.internal_bucket, Key=key)["Body"].read())
            result = results[name]
            assert (result["run_id"], result["order"]) == (run_id, name)
            if status != OrderStatus.CANCELLED.value:
                assert result["status"] == status, f"{name}: order says {status}, its result {result['status']}"
            if result["producer"] == "worker" and result["status"] == OrderStatus.SUCCEEDED.value:
                assert ran[name] == 1, f"{name}: a worker's success but {ran[name]} executions"
        else:
            assert status not in (OrderStatus.SUCCEEDED.value, OrderStatus.FAILED.value), (
                f"{name} is {status} without a result object")
            assert ran[name] == 0 and (status != OrderStatus.TIMED_OUT.value or dispatched[name] == 0), (
                f"{name} ran (or was dispatched) but no result was ever recorded: callback lost")
        if dispatched[name]:
            assert name in results, f"{name} was dispatched but has no result: callback lost"
        if status == OrderStatus.SKIPPED.value:
            assert ran[name] == 0 and dispatched[name] == 0 and name not in results

    # events: one terminal event per order, at most one 'running'
    by_order: dict[str, Counter] = {}
    for e in events:
        if e["event_type"].startswith("order_"):
            by_order.setdefault(e["order_name"], Counter())[e["event_type"]] += 1
    for name, status in statuses.items():
        kinds = by_order.get(name, Counter())
        assert kinds[f"order_{status}"] == 1, f"{name}: events {dict(kinds)} for final status {status}"
        terminal = {k: v for k, v in kinds.items() if k not in ("order_running", "order_queued")}
        assert terminal == {f"order_{status}": 1}, f"{name}: several terminal events {dict(kinds)}"
        assert kinds["order_running"] <= 1, f"{name}: moved to running {kinds['order_running']} times"
        assert kinds["order_running"] >= dispatched[name]

    assert not stack.pump_errors, stack.pump_errors
    return Evidence(run_id, done, statuses, results, ran, dispatched, events)


def _wait_workers_gone(stack: EmbeddedStack, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while stack.dispatcher.running():
        if time.monotonic() > deadline:
            raise AssertionError("workers still running long after the run finished")
        time.sleep(0.1)
