"""The orchestrator: on every wake-up, bring a run one step closer to done.

A wake-up is only a hint (S3 events are at-least-once, late and unordered); the truth is the
run's items and its callback objects, re-read on every evaluation. One invocation at a time
holds the run's lease; contenders leave a mark (``pending``) so the holder evaluates again
before letting go, and a holder that dies is replaced when its lease runs out and its own
message comes back from the queue.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from lambda_runtime import watchdog
from lambda_runtime.aws.clients import AwsClients, error_code, is_client_error, is_conditional_failure
from lambda_runtime.job import dag
from lambda_runtime.logs import logger
from lambda_runtime.masking import redact_credentials
from lambda_runtime.orchestrator.dispatch import Dispatcher
from lambda_runtime.orchestrator.presign import worker_payload
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import LOG_TAIL_CHARS, OrderResult
from lambda_runtime.schema.status import WORKER_RESULT_STATUSES, OrderStatus, RunStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.locks import Lease, LeaseLost, RunLocks
from lambda_runtime.store.runs import RunSnapshot, RunStore, Transition
from lambda_runtime.summary import run_summary
from lambda_runtime.vcs.base import NoopVcs, VcsProvider, notify

MAX_ROUNDS = 25
PARALLELISM = 16  # concurrent result reads and dispatches within one evaluation
# what an order's item says that never changes after packaging (cached per run) ...
STATIC_FIELDS = ("name", "target", "timeout", "depends_on", "must_succeed", "has_artifacts", "inputs")
# ... and what every evaluation has to re-read (run item fields included)
HOT_FIELDS = (
    "status",
    "deadline",
    "cancel_requested",
    "finalized",
    "packaging_error",
    "trace_id",
    "attempt",
    "dispatched_at",
    "watchdog",
    "dispatch_ref",
    "vcs",
    "vcs_updated_at",
)
STATIC_CACHE_RUNS = 256
REPORTING_MARGIN_SECONDS = 5.0
DISPATCH_CHUNK = 48  # orders started per fenced transaction, with the lease renewed between chunks


class RetryLater(RuntimeError):
    """The run could not be settled in this invocation; let the queue deliver the message again."""


@dataclass
class Orchestrator:
    settings: Settings
    clients: AwsClients
    dispatcher: Dispatcher
    vcs: VcsProvider = field(default_factory=NoopVcs)
    clock: Callable[[], float] = time.time
    # fault-injection seam: called with a point name ("locked", "state_written", "dispatched", "finalized")
    checkpoint: Callable[[str], None] = lambda _point: None

    def __post_init__(self) -> None:
        self._static: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._static_lock = threading.Lock()
        self.store = RunStore(
            self.clients.dynamodb,
            self.settings.orders_table,
            self.settings.events_table,
            clock=self.clock,
            event_ttl_days=self.settings.event_ttl_days,
        )
        self.locks = RunLocks(
            self.clients.dynamodb,
            self.settings.locks_table,
            lease_seconds=self.settings.lock_lease_seconds,
            clock=self.clock,
        )

    # ---- entry --------------------------------------------------------------------------
    def wake(self, run_id: str) -> str:
        """Evaluate ``run_id`` until no wake-up is left pending; returns what happened."""
        owner = uuid.uuid4().hex
        logger.thread_safe_append_keys(run_id=run_id, lease_owner=owner)  # every log line of this wake-up
        try:
            return self._wake(run_id, owner)
        finally:
            logger.thread_safe_remove_keys(["run_id", "lease_owner"])

    def _wake(self, run_id: str, owner: str) -> str:
        while True:
            lease = self.locks.acquire(run_id, owner)
            if lease is not None:
                break
            if self.locks.mark_pending(run_id):
                return "deferred"  # the live holder will evaluate again before releasing
        seen = lease.pending
        try:
            self.checkpoint("locked")
            for _ in range(MAX_ROUNDS):
                self.reconcile(run_id, lease)
                newer = self.locks.release(lease, seen_pending=seen)
                if newer is None:
                    return "evaluated"
                seen = newer
                self.locks.extend(lease)
            raise RetryLater(f"run {run_id} still busy after {MAX_ROUNDS} rounds")
        except LeaseLost:
            logger.warning("lease lost; the new holder carries on", extra={"run_id": run_id})
            return "lease-lost"
        except BaseException:
            try:
                self.locks.release(lease, seen_pending=None)
            except Exception:  # the lease will expire on its own
                logger.exception("could not release lease", extra={"run_id": run_id})
            raise

    # ---- one evaluation -----------------------------------------------------------------
    def load(self, run_id: str) -> RunSnapshot:
        """Read the run for a decision, re-reading only what can still change.

        After one full read, a per-run cache holds what never changes again: each order's
        static fields, and the status of orders that reached a final status. Later reads fetch
        the run item and the open orders only. Any order found in neither place (another
        invocation finished it) makes the read a full one again.
        """
        with self._static_lock:
            cached = self._static.get(run_id)
        if cached is not None:
            snap = self.store.load(run_id, fields=HOT_FIELDS, open_only=True)
            static, final = cached["static"], cached["final"]
            if snap.run is not None and all(n in snap.orders or n in final for n in static):
                for name, item in snap.orders.items():
                    item.update(static.get(name, {}))
                for name, status in final.items():
                    snap.orders.setdefault(name, {**static[name], "status": status})
                return snap
        snap = self.store.load(run_id)
        if snap.run and snap.run.get("status") == RunStatus.RUNNING.value and snap.orders:
            with self._static_lock:
                self._static[run_id] = {
                    "static": {n: {k: o[k] for k in STATIC_FIELDS if k in o} for n, o in snap.orders.items()},
                    "final": {},
                }
                while len(self._static) > STATIC_CACHE_RUNS:
                    self._static.popitem(last=False)
            self._remember_final(run_id, snap)
        return snap

    def _remember_final(self, run_id: str, snap: RunSnapshot) -> None:
        with self._static_lock:
            cached = self._static.get(run_id)
            if cached is not None:
                for name, item in snap.orders.items():
                    if OrderStatus(item["status"]).terminal:
                        cached["final"][name] = item["status"]

    def reconcile(self, run_id: str, lease: Lease) -> None:
        snap = self.load(run_id)
        run = snap.run
        if run is None or run.get("finalized"):
            return
        fence = self.locks.fence_check(lease)
        signals, result_orders = self._callbacks(run_id)
        now = self.clock()
        job_timed_out = layout.SIGNAL_JOB_TIMEOUT in signals or now >= float(run.get("deadline", now + 1))
        cancelled = bool(run.get("cancel_requested"))
        status = RunStatus(run["status"])
        if status in (RunStatus.ACCEPTED, RunStatus.PACKAGING):
            if cancelled or job_timed_out:
                self._finalize(snap, fence, cancelled=cancelled, job_timed_out=job_timed_out)
            return  # packaging will wake us when the orders exist
        running = [n for n in sorted(result_orders) if snap.orders.get(n, {}).get("status") == OrderStatus.RUNNING]
        changed = self._ingest(run_id, [snap.orders[n] for n in running], fence)
        if cancelled or job_timed_out:
            changed |= self._stop_all(run_id, snap, fence, cancelled=cancelled)
        elif not run.get("packaging_error"):
            self._repair_watchdogs(run, snap)
            changed |= self._advance(run, snap, fence, keepalive=lambda: self.locks.extend(lease))
        self._remember_final(run_id, snap)
        if all(OrderStatus(o["status"]).terminal for o in snap.orders.values()):
            self._finalize(snap, fence, cancelled=cancelled, job_timed_out=job_timed_out)
        elif changed and not isinstance(self.vcs, NoopVcs) and run.get("vcs"):
            self._publish_progress(run_id, run)

    def _publish_progress(self, run_id: str, run: dict[str, Any]) -> None:
        """Coalesced progress for the PR: at most one update per interval per run, however many
        orders change (GitHub's secondary rate limits); the final update is never skipped."""
        now = self.clock()
        if now - float(run.get("vcs_updated_at") or 0) < self.settings.vcs_update_interval_seconds:
            return
        self.store.update_run(run_id, {"vcs_updated_at": now})
        notify(self.vcs, "run_updated", run_summary(self.store.load(run_id)))

    def _callbacks(self, run_id: str) -> tuple[set[str], set[str]]:
        """One listing of the run's callback prefix: control signals present, orders with a result."""
        signals: set[str] = set()
        results: set[str] = set()
        prefix = f"{layout.CALLBACKS_PREFIX}{run_id}/"
        paginator = self.clients.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.settings.internal_bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                ref = layout.parse_callback_key(obj["Key"])
                if ref is None:
                    continue
                if ref.order:
                    results.add(ref.order)
                elif ref.signal:
                    signals.add(ref.signal)
        return signals, results

    def _ingest(self, run_id: str, items: list[dict[str, Any]], fence: dict[str, Any]) -> bool:
        """Record the results that arrived for running orders, all in as few transactions as possible."""
        if not items:
            return False
        with ThreadPoolExecutor(min(PARALLELISM, len(items))) as pool:
            results = list(pool.map(lambda item: self._read_result(run_id, item), items))
        moves = []
        for item, result in zip(items, results, strict=True):
            if result is None:
                continue
            result, reported_at = result
            fields = {
                "exit_code": result.exit_code,
                "started_at": result.started_at or item.get("dispatched_at"),
                "finished_at": result.finished_at or reported_at,
                "log_tail": result.log_tail[-LOG_TAIL_CHARS:],
                "reason": result.error,
                "reported_by": result.producer,
            }
            moves.append(
                Transition(
                    item["name"],
                    (OrderStatus.RUNNING,),
                    result.status,
                    fields,
                    {"exit_code": result.exit_code, "by": result.producer},
                )
            )
        moved = self.store.transition_many(run_id, moves, fence=fence)
        for m in moves:
            if m.name in moved:
                snap_item = next(i for i in items if i["name"] == m.name)
                snap_item.update(status=m.to.value, **{k: v for k, v in m.fields.items() if v is not None})
                if m.fields.get("reported_by") == "watchdog":  # a worker that is merely late must not go on
                    self._stop_worker(run_id, snap_item)
        if moved:
            self.checkpoint("state_written")
        return bool(moved)

    def _read_result(self, run_id: str, item: dict[str, Any]) -> tuple[OrderResult, float] | None:
        name = item["name"]
        try:
            obj = self.clients.s3.get_object(Bucket=self.settings.internal_bucket, Key=layout.result_key(run_id, name))
            raw = obj["Body"].read()
            reported_at = obj["LastModified"].timestamp()
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            result = OrderResult.model_validate_json(raw)
            if result.run_id != run_id or result.order != name or result.status not in WORKER_RESULT_STATUSES:
                raise ValueError("result names another run, order or status")
        except (ValidationError, ValueError) as exc:
            result = OrderResult(
                run_id=run_id,
                order=name,
                attempt=int(item.get("attempt", 1)),
                status=OrderStatus.FAILED,
                error=f"unreadable result: {str(exc)[:300]}",
                producer="engine",
            )
        return result, reported_at

    def _start_orders(
        self, run: dict[str, Any], snap: RunSnapshot, names: list[str], fence: dict[str, Any]
    ) -> set[str]:
        run_id = run["run_id"]
        now = self.clock()
        starts = []
        for name in names:
            attempt = int(snap.orders[name].get("attempt", 0)) + 1
            starts.append(
                Transition(
                    name,
                    (OrderStatus.QUEUED,),
                    OrderStatus.RUNNING,
                    {"attempt": attempt, "dispatched_at": now, "log_key": layout.log_key(run_id, name)},
                    {"target": snap.orders[name]["target"], "attempt": attempt},
                )
            )
        # at most once: orders are running *before* any side effect; a retry finds them running
        started = self.store.transition_many(run_id, starts, fence=fence)
        for m in starts:
            if m.name in started:
                snap.orders[m.name].update(status=OrderStatus.RUNNING.value, **m.fields)
        if started:
            self.checkpoint("state_written")
            ordered = [m.name for m in starts if m.name in started]
            with ThreadPoolExecutor(min(PARALLELISM, len(ordered))) as pool:
                list(pool.map(lambda n: self._dispatch(run, snap.orders[n]), ordered))
        return started

    def _advance(
        self,
        run: dict[str, Any],
        snap: RunSnapshot,
        fence: dict[str, Any],
        keepalive: Callable[[], None] = lambda: None,
    ) -> bool:
        run_id = run["run_id"]
        plan = dag.plan(_nodes(snap))
        skips = [
            Transition(
                n,
                (OrderStatus.QUEUED,),
                OrderStatus.SKIPPED,
                {"reason": f"dependency '{b}' did not succeed"},
                {"blocked_by": b},
            )
            for n, b in plan.skip.items()
        ]
        skipped = self.store.transition_many(run_id, skips, fence=fence)
        for m in skips:
            if m.name in skipped:
                snap.orders[m.name].update(status=OrderStatus.SKIPPED.value, **m.fields)
        started: set[str] = set()
        for i in range(0, len(plan.ready), DISPATCH_CHUNK):
            if i:
                keepalive()  # a wide layer must not outlast the lease
            started |= self._start_orders(run, snap, plan.ready[i : i + DISPATCH_CHUNK], fence)
        return bool(skipped or started)

    def _dispatch(self, run: dict[str, Any], item: dict[str, Any]) -> None:
        """Side effects for an order already marked running: its worker, then its watchdog.

        The worker goes first because it is on the run's critical path; an order whose
        holder dies before the watchdog starts is found by ``_repair_watchdogs`` (no
        ``watchdog`` recorded) on the next evaluation.
        """
        run_id, name, attempt = run["run_id"], item["name"], int(item["attempt"])
        payload = worker_payload(
            self.clients.s3,
            bucket=self.settings.internal_bucket,
            run_id=run_id,
            order=item,
            trace_id=run["trace_id"],
            attempt=attempt,
            expires_in=self._url_lifetime(int(item["timeout"])),
            not_after=self._watchdog_deadline(item) - self._reporting_margin(),
        )
        ref = ""
        try:
            ref = self.dispatcher.dispatch(item["target"], payload)
        except Exception as exc:  # never re-dispatch
            logger.exception("dispatch failed", extra={"run_id": run_id, "order": name})
            if is_client_error(exc):  # refused for sure: report it as the order's result now
                self._engine_result(run_id, name, attempt, f"dispatch failed: {redact_credentials(str(exc))[:500]}")
            # else the worker may have started after all: its result or the watchdog's will tell
        self.checkpoint("dispatched")
        execution = self._start_watchdog(run_id, item)
        self.store.set_order_fields(run_id, name, {"watchdog": execution, "dispatch_ref": ref})
        item.update(watchdog=execution, dispatch_ref=ref)

    def _url_lifetime(self, timeout: int) -> int:
        """Presigned URLs must outlive the order's timeout, the watchdog grace and a start-up margin."""
        return timeout + self.settings.watchdog_grace_seconds + self.settings.presign_margin_seconds

    def _start_watchdog(self, run_id: str, item: dict[str, Any]) -> str:
        name = item["name"]
        grace = self.settings.watchdog_grace_seconds
        body = OrderResult(
            run_id=run_id,
            order=name,
            attempt=int(item.get("attempt", 1)),
            status=OrderStatus.TIMED_OUT,
            producer="watchdog",
            error=f"no result within the {item['timeout']}s timeout plus {grace}s: the worker died or never started",
        ).model_dump_json()
        return watchdog.start(
            self.clients.sfn,
            self.settings.watchdog_arn,
            run_id=run_id,
            subject=name,
            deadline=self._watchdog_deadline(item),
            bucket=self.settings.internal_bucket,
            key=layout.result_key(run_id, name),
            body=body,
        )

    def _reporting_margin(self) -> float:
        """Time the worker keeps, before the watchdog speaks, to upload its log and result."""
        return min(REPORTING_MARGIN_SECONDS, self.settings.watchdog_grace_seconds / 2)

    def _watchdog_deadline(self, item: dict[str, Any]) -> float:
        """When the watchdog speaks for a silent worker; fixed by the dispatch time, so a repair
        after a crash computes the same deadline (and the same execution input)."""
        return float(item["dispatched_at"]) + int(item["timeout"]) + self.settings.watchdog_grace_seconds

    def _repair_watchdogs(self, run: dict[str, Any], snap: RunSnapshot) -> None:
        """A holder that died between ``running`` and the watchdog start left an order unguarded."""
        for item in snap.orders.values():
            if item["status"] == OrderStatus.RUNNING.value and not item.get("watchdog"):
                execution = self._start_watchdog(run["run_id"], item)
                self.store.set_order_fields(run["run_id"], item["name"], {"watchdog": execution})
                item["watchdog"] = execution

    def _engine_result(self, run_id: str, name: str, attempt: int, error: str) -> None:
        result = OrderResult(
            run_id=run_id,
            order=name,
            attempt=attempt,
            status=OrderStatus.FAILED,
            error=error,
            producer="engine",
            finished_at=self.clock(),
        )
        try:
            self.clients.s3.put_object(
                Bucket=self.settings.internal_bucket,
                Key=layout.result_key(run_id, name),
                Body=result.model_dump_json().encode(),
                IfNoneMatch="*",
            )
        except Exception as exc:
            if not is_conditional_failure(exc) and error_code(exc) != "PreconditionFailed":
                raise

    def _stop_all(self, run_id: str, snap: RunSnapshot, fence: dict[str, Any], *, cancelled: bool) -> bool:
        """Cancellation or job timeout: nothing new starts, running builds are stopped, late results ignored."""
        reason = "run cancelled" if cancelled else "job timeout reached"
        moves = []
        for item in snap.orders.values():
            st = OrderStatus(item["status"])
            if st is OrderStatus.QUEUED:
                to = OrderStatus.CANCELLED
            elif st is OrderStatus.RUNNING:
                to = OrderStatus.CANCELLED if cancelled else OrderStatus.TIMED_OUT
            else:
                continue
            moves.append(
                Transition(item["name"], (st,), to, {"reason": reason, "finished_at": self.clock()}, {"reason": reason})
            )
        moved = self.store.transition_many(run_id, moves, fence=fence)
        for m in moves:
            if m.name not in moved:
                continue
            item = snap.orders[m.name]
            if m.from_status[0] is OrderStatus.RUNNING:
                self._stop_worker(run_id, item)
            item.update(status=m.to.value, reason=reason)
        return bool(moved)

    def _stop_worker(self, run_id: str, item: dict[str, Any]) -> None:
        if not item.get("dispatch_ref"):
            return
        try:
            self.dispatcher.stop(item["target"], item["dispatch_ref"])
        except Exception:
            logger.exception("could not stop worker", extra={"run_id": run_id, "order": item["name"]})

    def _finalize(self, snap: RunSnapshot, fence: dict[str, Any], *, cancelled: bool, job_timed_out: bool) -> None:
        run = snap.run or {}
        run_id = run["run_id"]
        status = dag.job_status(_nodes(snap), cancelled=cancelled, job_timed_out=job_timed_out)
        snap = self.store.load(run_id)  # the full record (log tails, timings) for the summary
        if run.get("packaging_error") and status is RunStatus.SUCCEEDED:
            status = RunStatus.FAILED
        summary = run_summary(snap, status=status.value)
        summary["finished_at"] = self.clock()
        try:  # the done object first: if we crash after it, the retry finds it and only sets the flag
            self.clients.s3.put_object(
                Bucket=self.settings.done_bucket,
                Key=layout.done_key(run_id),
                Body=json.dumps(summary, default=str).encode(),
                IfNoneMatch="*",
                ContentType="application/json",
            )
        except Exception as exc:
            if not is_conditional_failure(exc) and error_code(exc) != "PreconditionFailed":
                raise
        counts: dict[str, int] = {}
        for o in snap.orders.values():
            counts[o["status"]] = counts.get(o["status"], 0) + 1
        won = self.store.finalize(run_id, status, {"status": status.value, "orders": counts}, fence=fence)
        self.checkpoint("finalized")
        if won:
            run.update(status=status.value, finalized=True)
            notify(self.vcs, "run_finished", summary)


def _nodes(snap: RunSnapshot) -> dict[str, dag.NodeState]:
    return {
        n: dag.NodeState(OrderStatus(o["status"]), bool(o.get("must_succeed", True)), tuple(o.get("depends_on", [])))
        for n, o in snap.orders.items()
    }


def request_cancel(store: RunStore, s3: Any, *, bucket: str, run_id: str, now: float | None = None) -> bool:
    """Mark a run cancelled and wake its orchestrator. False if the run is unknown or already final."""
    if not store.update_run(
        run_id, {"cancel_requested": True, "cancel_requested_at": now or time.time()}, unless_finalized=True
    ):
        return False
    s3.put_object(Bucket=bucket, Key=layout.control_key(run_id, layout.SIGNAL_CANCEL), Body=b"{}")
    return True
