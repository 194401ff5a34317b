"""Per-run orchestrator lease with an owner, a fencing epoch and a pending counter.

Why each part exists:
- ``lease_expires_at``: a holder that dies stops blocking others once its lease passes.
  DynamoDB TTL is never used for expiry (deletion lags by days; expired items stay readable).
- ``epoch``: incremented on every acquisition and checked inside the transactions that
  change run state, so a holder that paused past its lease cannot write over its successor.
- ``pending``: a contender that finds the lock held increments it (conditioned on the lock
  still being held); the holder releases only if ``pending`` is what it saw when it last
  evaluated, otherwise it evaluates again. That closes the lost-wakeup window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_runtime.aws.clients import is_conditional_failure
from lambda_runtime.schema.records import LeaseFence
from lambda_runtime.store.codec import from_item, value


@dataclass(frozen=True)
class Lease:
    run_id: str
    owner: str
    epoch: int
    pending: int


class RunLocks:
    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        lease_seconds: int = 120,
        clock: Callable[[], float] = time.time,
        gc_days: int = 30,
    ):
        self._ddb = dynamodb
        self._table = table
        self._lease = lease_seconds
        self._clock = clock
        self._gc_days = gc_days

    def acquire(self, run_id: str, owner: str) -> Lease | None:
        now = int(self._clock())
        try:
            resp = self._ddb.update_item(
                TableName=self._table,
                Key={"run_id": value(run_id)},
                UpdateExpression="SET #o = :o, lease_expires_at = :exp, pending = if_not_exists(pending, :zero), "
                "expire_at = :gc ADD epoch :one",
                ConditionExpression="attribute_not_exists(#o) OR lease_expires_at < :now",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":o": value(owner),
                    ":exp": value(now + self._lease),
                    ":now": value(now),
                    ":zero": value(0),
                    ":one": value(1),
                    ":gc": value(now + self._gc_days * 86400),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            # our own earlier attempt may have been applied with its answer lost (the SDK retried):
            # then the lease is ours already
            current = self._refused_item(exc, run_id)
            if current is not None and current.get("owner") == owner:
                return Lease(run_id, owner, int(current["epoch"]), int(current.get("pending", 0)))
            return None
        item = from_item(resp["Attributes"])
        return Lease(run_id, owner, int(item["epoch"]), int(item["pending"]))

    def mark_pending(self, run_id: str) -> bool:
        """Tell the live holder to look again. False when nobody holds the lock (acquire instead)."""
        now = int(self._clock())
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"run_id": value(run_id)},
                UpdateExpression="ADD pending :one",
                ConditionExpression="attribute_exists(#o) AND lease_expires_at >= :now",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":one": value(1), ":now": value(now)},
            )
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise

    def release(self, lease: Lease, *, seen_pending: int | None) -> int | None:
        """Release if nothing arrived since ``seen_pending``; else return the new pending count.

        ``seen_pending=None`` releases unconditionally (error path: the caller's own message is
        going back to the queue and will re-evaluate the whole run).
        """
        cond = "#o = :o AND epoch = :e"
        vals = {":o": value(lease.owner), ":e": value(lease.epoch), ":zero": value(0)}
        if seen_pending is not None:
            cond += " AND pending = :p"
            vals[":p"] = value(seen_pending)
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"run_id": value(lease.run_id)},
                UpdateExpression="SET lease_expires_at = :zero REMOVE #o",
                ConditionExpression=cond,
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=vals,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            current = self._refused_item(exc, lease.run_id)
        if current is None or current.get("owner") != lease.owner or current.get("epoch") != lease.epoch:
            raise LeaseLost(lease.run_id)
        return int(current.get("pending", 0))

    def extend(self, lease: Lease) -> None:
        now = int(self._clock())
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"run_id": value(lease.run_id)},
                UpdateExpression="SET lease_expires_at = :exp",
                ConditionExpression="#o = :o AND epoch = :e",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":o": value(lease.owner),
                    ":e": value(lease.epoch),
                    ":exp": value(now + self._lease),
                },
            )
        except Exception as exc:
            if is_conditional_failure(exc):
                raise LeaseLost(lease.run_id) from exc
            raise

    def _refused_item(self, exc: Exception, run_id: str) -> dict[str, Any] | None:
        """The lock item as the refused write found it: returned with the refusal (one call, not
        two), or read when the answer does not carry it."""
        item = getattr(exc, "response", {}).get("Item")
        return from_item(item) if item else self.read(run_id)

    def read(self, run_id: str) -> dict[str, Any] | None:
        resp = self._ddb.get_item(TableName=self._table, Key={"run_id": value(run_id)}, ConsistentRead=True)
        return from_item(resp["Item"]) if "Item" in resp else None

    def fence(self, lease: Lease) -> LeaseFence:
        """What state-changing transactions check to prove ``lease`` is still current."""
        return LeaseFence(self._table, lease.run_id, lease.owner, lease.epoch)


class LeaseLost(RuntimeError):
    """Another invocation took over this run (our lease expired); stop writing."""
