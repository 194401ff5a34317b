"""The orchestrator: on every wake-up, bring a run one step closer to done.

A wake-up is only a hint (S3 events are at-least-once, late and unordered); the truth is the
run's items and its callback objects, re-read on every evaluation. One invocation at a time
holds the run's lease; contenders leave a mark (``pending``) so the holder evaluates again
before letting go, and a holder that dies is replaced when its lease runs out and its own
message comes back from the queue.

What to do is decided by ``planner.plan`` without I/O; this module reads what the planner
needs, writes its transitions under the lease fence, and runs each side effect only for a
transition that was written.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from lambda_runtime import watchdog
from lambda_runtime.aws.clients import AwsClients, error_code, is_client_error, is_conditional_failure
from lambda_runtime.logs import log_keys, logger
from lambda_runtime.mask_digests import DigestMasker, DigestSet
from lambda_runtime.masking import redact_credentials
from lambda_runtime.notify.events import Notifier
from lambda_runtime.observability import legs, metrics
from lambda_runtime.observability import trace as traces
from lambda_runtime.observability.legs import Leg, Legs, carry, current_trace
from lambda_runtime.observability.metrics import EmfWriter, ReadyTimes
from lambda_runtime.orchestrator import planner
from lambda_runtime.orchestrator.admission import Admission, holder_of
from lambda_runtime.orchestrator.dispatch import FAILED_BUILD_STATES, Dispatcher
from lambda_runtime.orchestrator.minting import Minter, MintingError
from lambda_runtime.orchestrator.planner import Arrived, Decision, Effect, Step
from lambda_runtime.orchestrator.presign import worker_payload
from lambda_runtime.orchestrator.snapshots import CACHED_RUNS, SnapshotCache
from lambda_runtime.policy.model import TriggerEvent
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import OrderResult
from lambda_runtime.schema.records import LeaseFence, OrderRecord, RunRecord, RunSnapshot, RunSummary
from lambda_runtime.schema.status import OrderStatus, RunStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.locks import Lease, LeaseLost, RunLocks
from lambda_runtime.store.pr_locks import PrLocks
from lambda_runtime.store.runs import RunStore
from lambda_runtime.store.slots import DeploymentSlots, SlotsFull
from lambda_runtime.summary import run_summary
from lambda_runtime.vcs.base import NoopVcs, VcsProvider, notify

MAX_ROUNDS = 25
PARALLELISM = 16  # concurrent result reads and dispatches within one evaluation
DISPATCH_CHUNK = 48  # orders started per fenced transaction, with the lease renewed between chunks


class RetryLater(RuntimeError):
    """The run could not be settled in this invocation; let the queue deliver the message again."""


# the runs whose end may start another job (``on: after``): the default branch's pipelines and a
# merged change, never a pull request's plan or apply (a fork's code must not hand artifacts on)
CHAINABLE_TRIGGERS = frozenset({TriggerEvent.PUSH.value, TriggerEvent.SCHEDULE.value, TriggerEvent.AFTER.value,
                                TriggerEvent.MERGE.value})


@dataclass
class Orchestrator:
    settings: Settings
    clients: AwsClients
    dispatcher: Dispatcher
    vcs: VcsProvider = field(default_factory=NoopVcs)
    clock: Callable[[], float] = time.time
    # publishes every state change written (``notify.events``); the default publishes nothing
    notifier: Notifier = field(default_factory=lambda: Notifier(None, ""))
    # fault-injection seam: called with a point name ("locked", "state_written", "dispatched", "finalized")
    checkpoint: Callable[[str], None] = lambda _point: None
    # where each wake-up's EMF metrics go (``observability.metrics``): stdout on Lambda; the embedded
    # stack writes them to a file. Its legs' X-Ray segments go where the environment says (``xray``)
    emf: EmfWriter = field(init=False, default_factory=EmfWriter.from_env)
    legs: Legs = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.legs = Legs.from_env(clock=self.clock)
        self.store = RunStore(self.clients.dynamodb, s.orders_table, s.events_table, clock=self.clock,
                              event_ttl_days=s.event_ttl_days, run_retention_days=s.run_retention_days)
        self.locks = RunLocks(self.clients.dynamodb, s.locks_table, lease_seconds=s.lock_lease_seconds,
                              clock=self.clock)
        self.snapshots = SnapshotCache(self.store, capacity=CACHED_RUNS)
        # what QueueWait needs that the cache's reads leave out: kept for twice the cache's runs at
        # least (``ReadyTimes`` says why), twice that for wake-ups that read side by side
        self.ready_times = ReadyTimes(capacity=4 * CACHED_RUNS)
        self.pr_locks = PrLocks(self.clients.dynamodb, s.locks_table, s.events_table, clock=self.clock,
                                event_ttl_days=s.event_ttl_days)
        self.admission = Admission(self.pr_locks, self.vcs, clock=self.clock)
        self.minter = Minter(self.clients, s.internal_bucket, s.kms_key_arn)
        self._digest_sets: dict[str, DigestSet] = {}  # run -> digests of its minted values
        self._digest_orders: dict[str, set[str]] = {}  # run -> the orders those digests cover
        self._digest_lock = threading.Lock()
        self.slots = (DeploymentSlots(self.clients.dynamodb, s.locks_table, s.max_running_per_deployment)
                      if s.max_running_per_deployment else None)
        self.rules = planner.Rules(
            watchdog_grace_seconds=s.watchdog_grace_seconds,
            vcs_update_interval_seconds=s.vcs_update_interval_seconds,
            vcs_enabled=not isinstance(self.vcs, NoopVcs),
            max_running_per_run=s.max_running_per_run or None,
            max_running_per_deployment=s.max_running_per_deployment or None,
        )

    # ---- the lease loop -------------------------------------------------------------------
    def wake(self, run_id: str) -> str:
        """Evaluate ``run_id`` until no wake-up is left pending; returns what happened.

        One wake-up is one leg of the run (its own trace on every log line and event it writes,
        one X-Ray segment) and writes each metric document right after the write it counts."""
        owner = uuid.uuid4().hex
        with log_keys(run_id=run_id, lease_owner=owner), self.legs.leg("orchestrator", run_id) as leg, \
                metrics.collecting(self.emf):
            leg.outcome = self._wake(run_id, owner)
            return leg.outcome

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
    def reconcile(self, run_id: str, lease: Lease) -> None:
        """Read, decide, apply; a transition found stale (its condition no longer held) means the
        snapshot was behind, so the rest of that decision is dropped and the run decided again."""
        for _ in range(MAX_ROUNDS):
            snap = self.snapshots.load(run_id)
            if snap.run is None or snap.run.finalized:
                return
            self._observe(snap)
            signals, with_result = self._callbacks(run_id)
            running = [snap.orders[n] for n in sorted(with_result)
                       if n in snap.orders and snap.orders[n].status is OrderStatus.RUNNING]
            deployment_running = self.slots.running() if self.slots is not None else 0
            results = self._masked(snap, self._cross_checked(self._read_results(run_id, running), snap))
            decision = planner.plan(snap, results, signals, self.clock(), self.rules, deployment_running)
            if self._apply(snap, decision, self.locks.fence(lease), keepalive=lambda: self.locks.extend(lease)):
                return
        raise RetryLater(f"run {run_id}: snapshot still stale after {MAX_ROUNDS} reads")

    def _apply(self, snap: RunSnapshot, decision: Decision, fence: LeaseFence, *,
               keepalive: Callable[[], None]) -> bool:
        """Carry out ``decision``; False when a transition was stale and the run must be decided again."""
        run = snap.run
        assert run is not None
        # the state-change events of every write below, published once the workers are on their way
        # (they are for onlookers; the workers are the run), and published even if a step fails
        outbox: list[tuple[OrderRecord, OrderStatus]] = []
        try:
            complete = self._write(snap, decision.settle, fence, outbox)
            for name in decision.repair_watchdogs:  # a holder died between ``running`` and the watchdog
                self._guard(run.run_id, snap.orders[name])
            for name in decision.repair_timers:  # ... or between ``awaiting_approval`` and its timer
                self._start_timer(run.run_id, snap.orders[name])
            starts, refused = self._admit(run, snap, decision.start)
            if refused:
                self._write(snap, refused, fence, outbox)
                complete = False  # locked or blocked: the run is decided again, which skips their dependents
            for i in range(0, len(starts), DISPATCH_CHUNK):
                if i:
                    keepalive()  # a wide layer must not outlast the lease
                complete &= self._write(snap, starts[i : i + DISPATCH_CHUNK], fence, outbox)
        finally:
            if outbox:
                self.notifier.order_changes(run, outbox)
        self.snapshots.remember_final(run.run_id, snap)
        if not complete:
            return False
        if decision.wait_for_slot and self.slots is not None:
            self.slots.wait(run.run_id)  # first register, then look again: a slot freed meanwhile is not missed
            if self.slots.running() < self.slots.cap:
                return False
        if decision.finalize is not None:
            self._finalize(run, decision.finalize, fence)
        elif decision.publish_progress:
            self._publish_progress(run)
        return True

    def _write(self, snap: RunSnapshot, steps: list[Step], fence: LeaseFence,
               outbox: list[tuple[OrderRecord, OrderStatus]]) -> bool:
        """Write ``steps``' transitions in fenced batches, then run the effect of each one written;
        each change written goes to ``outbox`` (as written, with the status before) for its event."""
        if not steps:
            return True
        run = snap.run
        assert run is not None
        try:
            moved = self.store.transition_many(run.run_id, [s.transition for s in steps], fence=fence,
                                               slots=self.slots, order_traces={
                                                   s.transition.name: snap.orders[s.transition.name].trace
                                                   for s in steps})
        except SlotsFull:
            return False  # another run took the slots first: decide again with the new count
        written = [s for s in steps if s.transition.name in moved]
        previous = {s.transition.name: snap.orders[s.transition.name].status for s in written}
        for s in written:
            snap.orders[s.transition.name].update({"status": s.transition.to.value, **s.transition.fields})
        self._measure(run, snap, written)  # before anything can fail: what was written is counted
        if moved:
            self.checkpoint("state_written")
        dispatch = [snap.orders[s.transition.name] for s in written if s.effect is Effect.DISPATCH]
        for s in written:
            order = snap.orders[s.transition.name]
            if s.effect is Effect.STOP_WORKER:
                self._stop_worker(run.run_id, order)
            elif s.effect is Effect.START_TIMER:
                self._start_timer(run.run_id, order)
            if s.transition.to.terminal and (order.secret_refs or order.aws_role):
                self._drop_credentials(run.run_id, order)  # whatever ended it: nothing outlives the order
        if dispatch:
            with ThreadPoolExecutor(min(PARALLELISM, len(dispatch))) as pool:
                records = list(pool.map(carry(partial(self._dispatch, run)), dispatch))
            # each order's watchdog and dispatch reference, in one write for the layer (a holder that
            # dies before it leaves them missing, and the next one repairs the watchdogs)
            self.store.set_many_order_fields(run.run_id, {o.name: r for o, r in zip(dispatch, records, strict=True)
                                                          if r is not None})
            for order, record in zip(dispatch, records, strict=True):
                if record is not None:
                    order.watchdog = record["watchdog"]
        outbox.extend((snap.orders[n], was) for n, was in previous.items())
        if self.slots is not None and any(s.transition.from_status == (OrderStatus.RUNNING,) for s in written):
            self._wake_waiters(run.run_id)
        return len(written) == len(steps)

    def _admit(self, run: RunRecord, snap: RunSnapshot, steps: list[Step]) -> tuple[list[Step], list[Step]]:
        """Split starts into those that may go and those whose lock or requirements refuse them."""
        starts, refused = [], []
        for step in steps:
            order = snap.orders[step.transition.name]
            ending = self.admission.refuse(run, order) if (order.lock or order.command == "apply") else None
            if ending is None:
                starts.append(step)
            else:
                refused.append(Step(ending))
        return starts, refused

    def _wake_waiters(self, run_id: str) -> None:
        """Slots were freed (after the counter moved): every run waiting for one evaluates again."""
        assert self.slots is not None
        for waiting in sorted(self.slots.take_waiters() - {run_id}):
            self.clients.s3.put_object(Bucket=self.settings.internal_bucket, Body=b"{}",
                                       Key=layout.control_key(waiting, layout.SIGNAL_SLOT_PREFIX + uuid.uuid4().hex))

    # ---- observability ----------------------------------------------------------------------
    def _observe(self, snap: RunSnapshot) -> None:
        """What a read tells the leg (the run's trace, to file its segment under) and the metrics."""
        assert snap.run is not None
        leg = legs.current()
        if leg is not None:
            leg.bind(snap.run.trace_id)
        self.ready_times.observe(snap)

    def _measure(self, run: RunRecord, snap: RunSnapshot, written: list[Step]) -> None:
        """Metrics of the transitions just written, all in one call of the writer (one flush per
        write: a crash loses at most the write in progress), then the segment of each dispatched
        order that ended; never of a transition that was not written (its order is counted by its
        writer)."""
        self.ready_times.observe(snap, [s.transition.name for s in written])
        trace = current_trace()
        observations: list[metrics.Observation] = []
        ended: list[tuple[OrderRecord, str | None]] = []
        for s in written:
            order = snap.orders[s.transition.name]
            if s.transition.to is OrderStatus.RUNNING:
                ready = self.ready_times.ready_at(run.run_id, order)
                observations.append(metrics.order_dispatched(order, run_id=run.run_id, ready=ready, trace=trace))
            elif s.transition.to.terminal:
                reported_by = s.transition.fields.get("reported_by")
                observations.append(metrics.order_finished(
                    order, run_id=run.run_id, reported_by=reported_by, started_reported=s.worker_started is not None,
                    now=self.clock(), trace=trace))
                ended.append((order, reported_by))
        metrics.record(*observations)
        for order, reported_by in ended:
            self._order_leg(run, order, reported_by=reported_by, reported_in=trace)

    def _order_trace(self, run_id: str, order: OrderRecord) -> traces.LegTrace:
        """The order's leg trace (minted at packaging; an order packaged before there was one: from
        its dispatch time)."""
        try:
            return traces.parse(order.trace, field="the order's trace")
        except traces.TraceError:
            return traces.leg_at(run_id, float(order.dispatched_at or self.clock()))

    def _order_leg(self, run: RunRecord, order: OrderRecord, *, reported_by: str | None,
                   reported_in: str | None) -> None:
        """The X-Ray segment of an order that was dispatched and just ended: its worker's times."""
        if order.dispatched_at is None:
            return  # never dispatched (skipped, locked, ...): no leg ran
        notes: dict[str, str] = {k: v for k, v in (("reported_by", reported_by), ("reported_in", reported_in),
                                                   ("dispatch_ref", order.dispatch_ref)) if v}
        leg = Leg("order", self._order_trace(run.run_id, order), float(order.started_at or order.dispatched_at),
                  order=order.name, outcome=order.status.value, notes=dict(notes))
        leg.bind(run.trace_id)
        self.legs.send(leg, float(order.finished_at or self.clock()))

    # ---- reads ----------------------------------------------------------------------------
    def _callbacks(self, run_id: str) -> tuple[frozenset[str], set[str]]:
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
        return frozenset(signals), results

    def _read_results(self, run_id: str, orders: list[OrderRecord]) -> dict[str, Arrived]:
        if not orders:
            return {}
        with ThreadPoolExecutor(min(PARALLELISM, len(orders))) as pool:
            found = list(pool.map(carry(partial(self._read_result, run_id)), orders))
        return {o.name: a for o, a in zip(orders, found, strict=True) if a is not None}

    def _read_result(self, run_id: str, order: OrderRecord) -> Arrived | None:
        try:
            obj = self.clients.s3.get_object(Bucket=self.settings.internal_bucket,
                                             Key=layout.result_key(run_id, order.name))
            raw = obj["Body"].read()
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return Arrived(planner.read_result(raw, run_id=run_id, order=order), obj["LastModified"].timestamp())

    # ---- effects --------------------------------------------------------------------------
    def _dispatch(self, run: RunRecord, order: OrderRecord) -> dict[str, str] | None:
        """Side effects for an order already marked running: its worker, then its watchdog;
        returns the fields that record them (None: recorded already).

        The worker goes first because it is on the run's critical path; an order whose holder
        dies before the watchdog is recorded is repaired on the next evaluation (no ``watchdog``).
        """
        grace = self.settings.watchdog_grace_seconds
        lifetime = planner.url_lifetime(order.timeout, grace, self.settings.presign_margin_seconds)
        ref = ""
        try:
            minted = self.minter.mint(run.run_id, order, lifetime_seconds=lifetime,
                                      salt=bytes.fromhex(run.mask_salt) if run.mask_salt else None)
        except MintingError as exc:  # nothing started: the order fails now, with the reason
            self._engine_result(run.run_id, order, f"credentials could not be created: {exc}")
            self._guard(run.run_id, order, dispatch_ref=ref)
            return None
        payload = worker_payload(
            self.clients.s3,
            bucket=self.settings.internal_bucket,
            run_id=run.run_id,
            order=order,
            trace_id=str(self._order_trace(run.run_id, order)),  # the order's leg, not the run's
            attempt=order.attempt,
            expires_in=lifetime,
            not_after=planner.watchdog_deadline(order, grace) - planner.reporting_margin(grace),
            secrets_key=minted[0] if minted else None,
            mask_key=self._mask_input(run, order, minted[1] if minted else None),
        )
        try:
            ref = self.dispatcher.dispatch(order.target, payload)
        except Exception as exc:  # never re-dispatch
            logger.exception("dispatch failed", extra={"run_id": run.run_id, "order": order.name})
            if is_client_error(exc):  # refused for sure: report it as the order's result now
                self._engine_result(run.run_id, order, f"dispatch failed: {redact_credentials(str(exc))[:500]}")
            # else the worker may have started after all: its result or the watchdog's will tell
        self.checkpoint("dispatched")
        order.dispatch_ref = ref
        return {"watchdog": self._watch(run.run_id, order), "dispatch_ref": ref}

    def _guard(self, run_id: str, order: OrderRecord, **more: str) -> None:
        """Start the order's watchdog and record it (with ``more`` fields) on the order."""
        execution = self._watch(run_id, order)
        self.store.set_order_fields(run_id, order.name, {"watchdog": execution, **more})
        order.watchdog = execution

    def _watch(self, run_id: str, order: OrderRecord) -> str:
        """Start (idempotently) the order's watchdog; returns its execution ARN."""
        grace = self.settings.watchdog_grace_seconds
        body = OrderResult(
            run_id=run_id,
            order=order.name,
            attempt=order.attempt or 1,
            status=OrderStatus.TIMED_OUT,
            producer="watchdog",
            error=f"no result within the {order.timeout}s timeout plus {grace}s: the worker died or never started",
        ).model_dump_json()
        return watchdog.start(
            self.clients.sfn,
            self.settings.watchdog_arn,
            run_id=run_id,
            subject=order.name,
            deadline=planner.watchdog_deadline(order, grace),
            bucket=self.settings.internal_bucket,
            key=layout.result_key(run_id, order.name),
            body=body,
        )

    def _cross_checked(self, results: dict[str, Arrived], snap: RunSnapshot) -> dict[str, Arrived]:
        """A CodeBuild order's success is taken only if its build did not end otherwise: a result
        object that says "succeeded" for a build CodeBuild reports failed, stopped or unknown was
        not written by that build's worker (a forged or replayed result), and fails the order."""
        out = dict(results)
        for name, arrived in results.items():
            order, result = snap.orders[name], arrived.result
            if order.target != "codebuild" or result.status is not OrderStatus.SUCCEEDED or not order.dispatch_ref:
                continue
            outcome = getattr(self.dispatcher, "outcome", None)
            state = outcome(order.target, order.dispatch_ref) if outcome is not None else None
            if state in FAILED_BUILD_STATES:
                logger.warning("result refused: it contradicts the build", extra={"order": name, "build": state})
                refused = result.model_copy(update={
                    "status": OrderStatus.FAILED, "producer": "engine", "exit_code": None,
                    "error": f"result refused: it says succeeded, but build {order.dispatch_ref} ended {state}"})
                out[name] = Arrived(refused, arrived.reported_at)
        return out

    # ---- run-wide masking -------------------------------------------------------------------
    def _digests(self, snap: RunSnapshot) -> DigestSet | None:
        """The digests of every value minted in the run so far. Cached per run with the orders they
        cover; an order minted by another invocation (another warm instance, or before a cold
        start) is read from its digest object the first time the snapshot shows it dispatched."""
        run = snap.run
        if run is None or not run.mask_salt:
            return None
        given = {n for n, o in snap.orders.items() if (o.secret_refs or o.aws_role) and o.dispatched_at}
        with self._digest_lock:
            cached, known = self._digest_sets.get(run.run_id), self._digest_orders.get(run.run_id, set())
        missing = sorted(given - known)
        if missing:
            loaded = self.minter.run_digests(run.run_id, missing, bytes.fromhex(run.mask_salt))
            with self._digest_lock:
                current = self._digest_sets.get(run.run_id)
                cached = loaded if current is None else DigestSet.merge([current, loaded])
                self._digest_sets[run.run_id] = cached
                self._digest_orders.setdefault(run.run_id, set()).update(missing)
        return cached

    def _masked(self, snap: RunSnapshot, results: dict[str, Arrived]) -> dict[str, Arrived]:
        """Results with every secret of the run masked in their log tail and error, so an order that
        printed another order's secret (an artifact, a shared file) does not reach the PR comment
        or the summary with it."""
        digests = self._digests(snap)  # also brings the cache up to date before this step dispatches
        if not digests or not results:
            return results
        masker = DigestMasker(digests)
        out = {}
        for name, a in results.items():
            masked = a.result.model_copy(update={"log_tail": masker.mask(a.result.log_tail),
                                                 "error": masker.mask(a.result.error) if a.result.error else None})
            out[name] = Arrived(masked, a.reported_at)
        return out

    def _mask_input(self, run: RunRecord, order: OrderRecord, own: DigestSet | None) -> str | None:
        """Write the run's digests so far (this order's own included) for its worker; None if empty."""
        with self._digest_lock:
            current = self._digest_sets.get(run.run_id)
            if own is not None:
                current = own if current is None else DigestSet.merge([current, own])
                self._digest_sets[run.run_id] = current
                self._digest_orders.setdefault(run.run_id, set()).add(order.name)
        if current is None or not len(current):
            return None
        key = layout.mask_input_key(run.run_id, order.name)
        self.clients.s3.put_object(Bucket=self.settings.internal_bucket, Key=key, Body=current.to_json().encode(),
                                   ContentType="application/json")
        return key

    def _start_timer(self, run_id: str, order: OrderRecord) -> None:
        """The wake-up at the end of the order's wait timer (idempotent: one execution per order)."""
        signal = layout.SIGNAL_WAIT_PREFIX + order.name
        execution = watchdog.start(
            self.clients.sfn, self.settings.watchdog_arn, run_id=run_id, subject=signal,
            # a little after the timer ends: a wake-up before it (Step Functions' clock ahead of ours) would
            # find the order still waiting, and no other wake-up would come
            deadline=order.wait_until + planner.TIMER_SKEW_SECONDS, bucket=self.settings.internal_bucket,
            key=layout.control_key(run_id, signal), body=json.dumps({"signal": signal, "run_id": run_id}))
        self.store.set_order_fields(run_id, order.name, {"timer": execution})
        order.timer = execution

    def _drop_credentials(self, run_id: str, order: OrderRecord) -> None:
        try:
            self.minter.drop(run_id, order.name)
        except Exception:  # the bucket's lifecycle rule removes it later
            logger.exception("could not delete minted credentials", extra={"run_id": run_id, "order": order.name})

    def _engine_result(self, run_id: str, order: OrderRecord, error: str) -> None:
        result = OrderResult(run_id=run_id, order=order.name, attempt=order.attempt, status=OrderStatus.FAILED,
                             error=error, producer="engine", finished_at=self.clock())
        self._put_once(self.settings.internal_bucket, layout.result_key(run_id, order.name),
                       result.model_dump_json().encode())

    def _stop_worker(self, run_id: str, order: OrderRecord) -> None:
        if not order.dispatch_ref:
            return
        try:
            self.dispatcher.stop(order.target, order.dispatch_ref)
        except Exception:
            logger.exception("could not stop worker", extra={"run_id": run_id, "order": order.name})

    def _publish_progress(self, run: RunRecord) -> None:
        """Coalesced progress for the PR (the planner decides when: GitHub's secondary rate limits);
        the final update is never skipped."""
        self.store.update_run(run.run_id, {"vcs_updated_at": self.clock()})
        notify(self.vcs, "run_updated", run_summary(self.store.load(run.run_id)))

    def _finalize(self, run: RunRecord, status: RunStatus, fence: LeaseFence) -> None:
        snap = self.store.load(run.run_id)  # the full record (log tails, timings) for the summary
        summary = run_summary(snap, status=status.value)
        summary["finished_at"] = self.clock()
        # the done object first: if we crash after it, the retry finds it and only sets the flag
        self._put_once(self.settings.done_bucket, layout.done_key(run.run_id),
                       json.dumps(summary, default=str).encode())
        self._announce_end(snap, summary)
        counts: dict[str, int] = {}
        for o in snap.orders.values():
            counts[o.status.value] = counts.get(o.status.value, 0) + 1
        won = self.store.finalize(run.run_id, run.status, status, {"status": status.value, "orders": counts},
                                  fence=fence, orders=snap.orders)
        if won and snap.run is not None:  # counted once: only by the finalize that won
            metrics.record(metrics.run_finished(snap.run, status, finished_at=float(summary["finished_at"]),
                                                trace=current_trace()))
        self.checkpoint("finalized")
        if won:
            run.status, run.finalized = status, True
            self._give_back_locks(run, snap)
            self.notifier.publish_drift(summary)  # first: the run's final event is its last
            self.notifier.publish_run_finished(summary)
            notify(self.vcs, "run_finished", summary)

    def _announce_end(self, snap: RunSnapshot, summary: RunSummary) -> None:
        """A GitHub run's end, as a delivery for the jobs that follow it (``on: after``): written
        before the finalized flag, once, so a crash in between cannot lose it (the packaging
        function decides whether any job follows)."""
        run = snap.run
        if run is None or run.vcs != "github" or not run.repo or not self.settings.github_enabled:
            return
        if run.trigger not in CHAINABLE_TRIGGERS:  # a pull request's run: its code is nobody's reviewed change
            return
        event = {"iac_ci": "after", "run_id": run.run_id, "repo": run.repo, "job": run.name,
                 "status": summary["status"], "commit": run.commit, "branch": run.branch,
                 "trigger": run.trigger, "orders": sorted(snap.orders), "params": run.params or {},
                 "chain": run.chain or []}
        self._put_once(self.settings.internal_bucket, layout.webhook_key(layout.INTERNAL_PROVIDER,
                                                                        f"after-{run.run_id}"),
                       json.dumps(event).encode())

    def _give_back_locks(self, run: RunRecord, snap: RunSnapshot) -> None:
        """A run outside a pull request holds its locks only while it runs; a merge's apply run
        gives the pull request's locks back once the merged change is applied."""
        holder = holder_of(run)
        if not (run.release_locks or (holder.key.startswith("run:") and any(o.lock for o in snap.orders.values()))):
            return
        try:
            self.pr_locks.release_all(holder.key, by="iac-ci", reason=f"run {run.run_id} ended {run.status.value}")
        except Exception:  # they expire on their own; an operator can release them (iac-ci unlock)
            logger.exception("could not release locks", extra={"run_id": run.run_id})

    def _put_once(self, bucket: str, key: str, body: bytes) -> None:
        """Create the JSON object ``key`` unless it exists: the first writer wins, a retry is a no-op."""
        try:
            self.clients.s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*",
                                       ContentType="application/json")
        except Exception as exc:
            if not is_conditional_failure(exc) and error_code(exc) != "PreconditionFailed":
                raise
