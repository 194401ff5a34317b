"""GitHub delivery records: one per ``X-GitHub-Delivery``, so a redelivery never starts a second job.

A record lives in the idempotency table (key ``github-delivery#<id>``) and moves
``queued`` (the webhook was verified and queued) -> ``processing`` (the packaging function
claimed it, under a lease a crashed claimer loses) -> its outcome (``accepted``, ``no-config``,
``invalid``), or back to ``queued`` when processing raised, so the queue's retry can claim it
again. Only a record in status ``failed`` may be recorded anew (GitHub's "redeliver" button).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from lambda_runtime.aws.clients import is_conditional_failure
from lambda_runtime.store.codec import value

DELIVERY_TTL_SECONDS = 14 * 86400
PROCESSING_LEASE_SECONDS = 900


class Deliveries:
    """Delivery records in the idempotency table (key ``github-delivery#<id>``)."""

    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], float] = time.time):
        self._ddb, self._table, self._clock = dynamodb, table, clock

    @staticmethod
    def _key(delivery: str) -> dict[str, Any]:
        return {"id": value(f"github-delivery#{delivery}")}

    def record(self, delivery: str) -> bool:
        """True if this delivery is new (or failed before); False for a duplicate."""
        now = int(self._clock())
        nonce = uuid.uuid4().hex  # tells our own applied-but-unanswered write from someone else's
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={**self._key(delivery), "status": value("queued"), "received_at": value(now),
                      "expiration": value(now + DELIVERY_TTL_SECONDS), "writer": value(nonce)},
                ConditionExpression="attribute_not_exists(id) OR #s = :failed",
                ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":failed": value("failed")},
            )
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return self._written_by(delivery, nonce)
            raise

    def _written_by(self, delivery: str, nonce: str) -> bool:
        item = self._ddb.get_item(TableName=self._table, Key=self._key(delivery), ConsistentRead=True).get("Item")
        return bool(item) and item.get("writer", {}).get("S") == nonce

    def claim(self, delivery: str) -> bool:
        """Move queued -> processing (or take over a stale processing); False if done elsewhere."""
        now = int(self._clock())
        nonce = uuid.uuid4().hex
        try:
            self._ddb.update_item(
                TableName=self._table, Key=self._key(delivery),
                UpdateExpression="SET #s = :p, lease_until = :until, writer = :w",
                ConditionExpression="#s = :q OR (#s = :p AND lease_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":p": value("processing"), ":q": value("queued"), ":now": value(now),
                                           ":until": value(now + PROCESSING_LEASE_SECONDS), ":w": value(nonce)},
            )
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return self._written_by(delivery, nonce)
            raise

    def finish(self, delivery: str, status: str, **fields: Any) -> None:
        names = {"#s": "status", **{f"#f{i}": k for i, k in enumerate(fields)}}
        values = {":s": value(status), **{f":f{i}": value(v) for i, v in enumerate(fields.values())}}
        sets = ", ".join(["#s = :s", *(f"#f{i} = :f{i}" for i in range(len(fields)))])
        self._ddb.update_item(TableName=self._table, Key=self._key(delivery), UpdateExpression=f"SET {sets}",
                              ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def forget(self, delivery: str) -> None:
        """Drop the record of a delivery that could not be queued, so GitHub's retry is not a duplicate."""
        self._ddb.delete_item(TableName=self._table, Key=self._key(delivery))
