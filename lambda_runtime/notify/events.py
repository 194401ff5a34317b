"""Publish run and order state changes to EventBridge (``schema.events`` describes them).

The publisher is a bystander of the engine: it is called after a change is written, and
nothing it does (an unknown bus, throttling, an outage) reaches the caller. A failed publish is
logged with the run id and dropped; the run's state, its events table and its done object do
not depend on it. With ``settings.event_bus`` empty it publishes nothing and creates no client.

PutEvents takes at most 10 entries and 256 KB per request, and may accept some entries of a
request and refuse others (``FailedEntryCount``, an ``ErrorCode`` per refused entry): entries
go in batches within both limits, and only the refused entries are sent again, a few times.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lambda_runtime.logs import logger
from lambda_runtime.masking import redact_credentials
from lambda_runtime.schema.events import (
    DRIFT_DETECTED,
    ORDER_STATE_CHANGE,
    RUN_STATE_CHANGE,
    RUN_SUBJECT,
    SOURCE,
    DriftDetected,
    EventDetail,
    OrderStateChange,
    RunStateChange,
    clip,
    event_id,
)
from lambda_runtime.schema.records import OrderRecord, RunRecord, RunSummary
from lambda_runtime.schema.status import OrderStatus, RunStatus

if TYPE_CHECKING:
    from lambda_runtime.aws.clients import AwsClients
    from lambda_runtime.settings import Settings

MAX_ENTRIES = 10  # PutEvents: entries per request
MAX_BYTES = 256 * 1024  # PutEvents: one entry, and all entries of a request together
TIME_BYTES = 14  # what an entry's Time counts towards its size
MAX_ATTEMPTS = 3  # sends of an entry EventBridge refused (botocore has retried each call already)
IDENTITIES = 512  # runs whose job name and trigger are remembered (``Notifier.lookup``)
BACKOFF_SECONDS = 0.2  # before the 2nd send; doubled before each further one
# refusals a resend cannot fix: the entry itself, or the publisher's permissions, are wrong
PERMANENT_ERRORS = frozenset({"MalformedDetail", "InvalidArgument", "ValidationException", "AccessDeniedException",
                              "NotAuthorizedForSourceException"})

Detail = EventDetail | Mapping[str, Any]


@dataclass
class Notifier:
    """Publishes on ``bus`` with ``client`` (an EventBridge client; None or an empty bus: publishes nothing).

    ``lookup`` reads a run item whole: the orchestrator decides from a projected read that lacks
    the fields naming the run (its job name, its trigger), so the first order event of a run reads
    them once; they never change, and are remembered for the run's later events."""

    client: Any | None
    bus: str
    deployment: str = "iac-ci"
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    max_attempts: int = MAX_ATTEMPTS
    lookup: Callable[[str], RunRecord | None] | None = None
    published: int = field(default=0, init=False)  # entries EventBridge accepted, for logs and tests
    dropped: int = field(default=0, init=False)  # entries given up on
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)  # runs share one
    _identities: OrderedDict[str, RunRecord] = field(default_factory=OrderedDict, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, clients: AwsClients, **kw: Any) -> Notifier:
        if not settings.event_bus:
            return cls(None, "", settings.deployment_name, **kw)
        from lambda_runtime.store.runs import RunStore

        store = RunStore(clients.dynamodb, settings.orders_table, settings.events_table)
        return cls(clients.events, settings.event_bus, settings.deployment_name, lookup=store.get_run, **kw)

    @property
    def enabled(self) -> bool:
        return bool(self.bus) and self.client is not None

    # ---- the engine's changes -----------------------------------------------------------------
    def order_changes(self, run: RunRecord, changes: Iterable[tuple[OrderRecord, OrderStatus]]) -> int:
        """One ``ORDER_STATE_CHANGE`` per ``(order as written, its status before)``; returns how many were published."""
        if not self.enabled:
            return 0
        try:
            now, named = self.clock(), self._identity(run)
            details = [self.order_change(named, order, previous, now) for order, previous in changes]
        except Exception:
            logger.exception("order events not built; none published", extra={"run_id": run.run_id})
            return 0
        return self.publish_many((ORDER_STATE_CHANGE, d) for d in details)

    def publish_run_started(self, summary: RunSummary) -> int:
        """``RUN_STATE_CHANGE`` for a run that just went ``running`` (its orders are stored, all queued).
        Called by packaging right after its ``packaging -> running`` write succeeded."""
        return self._run_change(summary, RunStatus.RUNNING, final=False)

    def publish_run_finished(self, summary: RunSummary) -> int:
        """The one ``RUN_STATE_CHANGE`` with ``final`` true, for the summary of the done object."""
        return self._run_change(summary, summary.get("status", ""), final=True)

    def publish_drift(self, summary: RunSummary) -> int:
        """One ``DRIFT_DETECTED`` per order of the ended run that found drift."""
        if not self.enabled:
            return 0
        now = self.clock()
        events = [(DRIFT_DETECTED, DriftDetected(
            event_id=event_id(summary["run_id"], name, "drift_detected"), deployment=self.deployment,
            run_id=summary["run_id"], job=summary.get("name", ""), repo=summary.get("repo"),
            commit=summary.get("commit"), pr_number=summary.get("pr_number"),
            trigger=summary.get("trigger") or "submit", time=now, order=name, exit_code=view.get("exit_code")))
            for name, view in summary.get("orders", {}).items() if view.get("status") == OrderStatus.DRIFTED.value]
        return self.publish_many(events) if events else 0

    def _run_change(self, summary: RunSummary, status: str, *, final: bool) -> int:
        if not self.enabled:
            return 0
        try:
            detail = self.run_change(summary, RunStatus(status), final=final, now=self.clock())
        except Exception:
            logger.exception("run event not built; not published", extra={"run_id": summary.get("run_id")})
            return 0
        return self.publish(RUN_STATE_CHANGE, detail)

    def _identity(self, run: RunRecord) -> RunRecord:
        """``run`` as read whole (its naming fields), read at most once per run while remembered."""
        with self._lock:
            known = self._identities.get(run.run_id)
            if known is not None:
                self._identities.move_to_end(run.run_id)
                return known
        try:
            whole = (self.lookup(run.run_id) if self.lookup is not None else None) or run
        except Exception:  # published with what the caller had; read again next time
            logger.warning("run not read for its events", exc_info=True, extra={"run_id": run.run_id})
            return run
        named = RunRecord(run_id=run.run_id, name=whole.name, repo=whole.repo, commit=whole.commit,
                          pr_number=whole.pr_number, trigger=whole.trigger)  # nothing else is kept
        with self._lock:
            self._identities[run.run_id] = named
            while len(self._identities) > IDENTITIES:
                self._identities.popitem(last=False)
        return named

    # ---- details --------------------------------------------------------------------------------
    def order_change(self, run: RunRecord, order: OrderRecord, previous: OrderStatus, now: float) -> OrderStateChange:
        return OrderStateChange(
            event_id=event_id(run.run_id, order.name, order.status.value, order.attempt),
            deployment=self.deployment,
            run_id=run.run_id,
            job=run.name,
            repo=run.repo,
            commit=run.commit,
            pr_number=run.pr_number,
            trigger=run.trigger,
            time=now,
            order=order.name,
            status=order.status,
            previous=previous,
            attempt=order.attempt,
            exit_code=order.exit_code,
            reason=clip(redact_credentials(order.reason)) if order.reason else None,
            trace=order.trace or None,
        )

    def run_change(self, summary: RunSummary, status: RunStatus, *, final: bool, now: float) -> RunStateChange:
        counts: dict[str, int] = {}
        for view in summary.get("orders", {}).values():
            counts[view["status"]] = counts.get(view["status"], 0) + 1
        created, finished = summary.get("created_at"), summary.get("finished_at")
        duration = round(float(finished) - float(created), 3) if final and created and finished else None
        return RunStateChange(
            event_id=event_id(summary["run_id"], RUN_SUBJECT, status.value),
            deployment=self.deployment,
            run_id=summary["run_id"],
            job=summary.get("name", ""),
            repo=summary.get("repo"),
            commit=summary.get("commit"),
            pr_number=summary.get("pr_number"),
            trigger=summary.get("trigger") or "submit",
            time=now,
            status=status,
            final=final,
            orders=counts,
            upstream_run_id=summary.get("upstream_run_id"),
            duration_s=duration,
        )

    # ---- publishing -----------------------------------------------------------------------------
    def publish(self, detail_type: str, detail: Detail) -> int:
        """Publish one event of ``detail_type`` (any of ``schema.events.DETAIL_TYPES``); returns 1
        if EventBridge accepted it, else 0. Never raises."""
        return self.publish_many([(detail_type, detail)])

    def publish_many(self, events: Iterable[tuple[str, Detail]]) -> int:
        """Publish ``(detail_type, detail)`` pairs in as few requests as the limits allow; returns
        how many EventBridge accepted. Never raises."""
        if not self.enabled:
            return 0
        try:
            return self._publish([e for e in (self._entry(t, d) for t, d in events) if e is not None])
        except Exception:  # a bug here must not become the engine's
            logger.exception("events not published")
            return 0

    def _entry(self, detail_type: str, detail: Detail) -> dict[str, Any] | None:
        body = detail.model_dump(mode="json") if isinstance(detail, EventDetail) else dict(detail)
        entry = {"Source": SOURCE, "DetailType": detail_type, "EventBusName": self.bus,
                 "Time": datetime.fromtimestamp(float(body.get("time") or self.clock()), UTC),
                 "Detail": _json(body)}
        # the one field with no natural bound: halved until the entry fits
        while entry_size(entry) > MAX_BYTES and isinstance(body.get("reason"), str) and len(body["reason"]) > 64:
            body["reason"] = clip(body["reason"], len(body["reason"]) // 2)
            entry["Detail"] = _json(body)
        if entry_size(entry) > MAX_BYTES:
            self._count(dropped=1)
            logger.error("event over 256 KB; not published",
                         extra={"run_id": body.get("run_id"), "detail_type": detail_type})
            return None
        return entry

    def _publish(self, entries: list[dict[str, Any]]) -> int:
        accepted = 0
        groups = batches(entries)
        for n, batch in enumerate(groups):
            ok, lost, call_failed = self._send(batch)
            accepted += ok
            self._give_up(lost, batch)
            if call_failed:  # the call itself failed, after botocore's retries: the next ones would too
                rest = [e for later in groups[n + 1 :] for e in later]
                self._give_up(len(rest), rest)
                break
        self._count(published=accepted)
        return accepted

    def _send(self, batch: list[dict[str, Any]]) -> tuple[int, int, bool]:
        """Send ``batch``, then the entries EventBridge refused again, up to ``max_attempts`` sends
        in all; returns (entries accepted, entries given up, whether a call failed outright)."""
        assert self.client is not None
        pending, accepted, lost, codes = batch, 0, 0, [""]
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                resp = self.client.put_events(Entries=pending)
            except Exception as exc:
                logger.warning("PutEvents failed", extra={"error": redact_credentials(str(exc))[:500],
                                                          "run_ids": _run_ids(pending)})
                return accepted, lost + len(pending), True
            refused = [(e, str(a["ErrorCode"])) for e, a in zip(pending, resp.get("Entries", []), strict=False)
                       if a.get("ErrorCode")]
            accepted += len(pending) - len(refused)
            codes = sorted({code for _, code in refused})
            pending = [e for e, code in refused if code not in PERMANENT_ERRORS]
            if len(pending) < len(refused):
                lost += len(refused) - len(pending)
                logger.error("EventBridge refused events for good", extra={"codes": codes, "run_ids": _run_ids(batch)})
            if not pending:
                return accepted, lost, False
        logger.warning("EventBridge still refuses events after retries", extra={"codes": codes})
        return accepted, lost + len(pending), False

    def _give_up(self, count: int, entries: Sequence[dict[str, Any]]) -> None:
        if count > 0:
            self._count(dropped=count)
            logger.error("events not published", extra={"count": count, "run_ids": _run_ids(entries)})

    def _count(self, *, published: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self.published += published
            self.dropped += dropped


def _json(body: Mapping[str, Any]) -> str:
    return json.dumps(body, default=str, separators=(",", ":"))


def entry_size(entry: Mapping[str, Any]) -> int:
    """An entry's size as EventBridge counts it against the 256 KB limits."""
    size = TIME_BYTES if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(key, "")).encode())
    return size + sum(len(r.encode()) for r in entry.get("Resources", ()))


def batches(entries: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``entries`` in order, cut into requests of at most ``MAX_ENTRIES`` entries and ``MAX_BYTES``."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for entry in entries:
        n = entry_size(entry)
        if not out or len(out[-1]) >= MAX_ENTRIES or size + n > MAX_BYTES:
            out.append([])
            size = 0
        out[-1].append(entry)
        size += n
    return out


def _run_ids(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    ids: set[str] = set()
    for e in entries:
        try:
            ids.add(str(json.loads(e["Detail"]).get("run_id")))
        except (ValueError, KeyError, AttributeError):
            continue
    return sorted(ids)
