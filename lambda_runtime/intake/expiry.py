"""Runs past their retention: ``GET /runs/{id}``, the log route and the logs page a PR's link opens
answer 410 saying when the run ended and when it expired, where a bare 404 would leave the reader
wondering whether the id is wrong.

A final run's items in the orders table carry a TTL (``expire_at``, epoch seconds). DynamoDB deletes
an expired item only eventually, days later, and it stays readable until then, so a run is expired
when its run item says so (``expire_at`` <= now), whether or not it is still there. Once the items
are gone, the run's order events (kept far longer) still prove it existed: a run without items but
with events is expired too, and its ``job_completed`` event says when it ended. A run never seen has
neither, and stays a 404.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_runtime.aws.clients import error_code
from lambda_runtime.intake.reply import Reply
from lambda_runtime.logs import logger
from lambda_runtime.schema.records import RunRecord
from lambda_runtime.store.codec import from_item, value

DAY_SECONDS = 86400
JOB_COMPLETED = "job_completed"
RECENT_EVENTS = 25  # the run's newest events: its job_completed is the last or nearly the last one


@dataclass(frozen=True)
class Expired:
    """What is known of an expired run: when it ended and expired (either may be unknown once its
    items are gone) and how long runs are kept."""

    run_id: str
    retention_days: int
    ended_at: float | None = None
    expired_at: float | None = None
    last_event_at: float | None = None

    def message(self) -> str:
        kept = f"runs are kept {self.retention_days} day{'' if self.retention_days == 1 else 's'} after they end"
        if self.ended_at is not None and self.expired_at is not None:
            return f"run {self.run_id} ended on {_date(self.ended_at)} and expired on {_date(self.expired_at)} ({kept})"
        last = f"; its last event was on {_date(self.last_event_at)}" if self.last_event_at is not None else ""
        return f"run {self.run_id} has expired and its records are gone ({kept}){last}"

    def reply(self) -> Reply:
        return Reply(410, {"error": self.message(), "run_id": self.run_id, "expired": True,
                           "ended_at": self.ended_at, "expire_at": self.expired_at})


def expired_run(run: RunRecord, *, now: float, retention_days: int) -> Expired | None:
    """The run item's verdict: expired once its ``expire_at`` is past, though DynamoDB still holds it."""
    expire_at = getattr(run, "expire_at", None)
    if isinstance(expire_at, bool) or not isinstance(expire_at, (int, float)) or expire_at > now:
        return None
    ended = run.finished_at if run.finished_at is not None else float(expire_at) - retention_days * DAY_SECONDS
    return Expired(run.run_id, retention_days, ended_at=ended, expired_at=float(expire_at))


def expired_from_events(run_id: str, events: list[dict[str, Any]], *, retention_days: int) -> Expired | None:
    """The verdict of a run whose items are gone, from its newest events (None: it has none)."""
    if not events:
        return None
    times = {str(e.get("event_type")): float(e["epoch_ms"]) / 1000 for e in events if "epoch_ms" in e}
    ended = times.get(JOB_COMPLETED)
    if ended is not None:
        return Expired(run_id, retention_days, ended_at=ended, expired_at=ended + retention_days * DAY_SECONDS)
    return Expired(run_id, retention_days, last_event_at=max(times.values(), default=None))


class RunExpiry:
    """Decides whether a run is expired, reading its events only when its run item is gone."""

    def __init__(self, dynamodb: Any, events_table: str, *, retention_days: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._ddb = dynamodb
        self._events_table = events_table
        self.retention_days = retention_days
        self._clock = clock

    def check(self, run_id: str, run: RunRecord | None) -> Expired | None:
        if run is not None:
            return expired_run(run, now=self._clock(), retention_days=self.retention_days)
        return expired_from_events(run_id, self._recent_events(run_id), retention_days=self.retention_days)

    def _recent_events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's newest events (their sort key starts with the time written). A role that may not
        read the events table answers as if there were none: a 404, logged."""
        try:
            resp = self._ddb.query(
                TableName=self._events_table, KeyConditionExpression="run_id = :r",
                ExpressionAttributeValues={":r": value(run_id)}, ScanIndexForward=False, Limit=RECENT_EVENTS,
                ProjectionExpression="sk, event_type, epoch_ms",
            )
        except Exception as exc:
            if _refused(exc):
                logger.warning("cannot read the order events to tell an expired run from an unknown one",
                               extra={"run_id": run_id})
                return []
            raise
        return [from_item(i) for i in resp.get("Items", [])]


def _refused(exc: BaseException) -> bool:
    """An authorization refusal (DynamoDB says AccessDeniedException; an HTTP 403 says the same)."""
    if error_code(exc) in ("AccessDeniedException", "AccessDenied"):
        return True
    resp = getattr(exc, "response", None)
    return isinstance(resp, dict) and resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403


def _date(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
