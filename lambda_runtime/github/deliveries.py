"""GitHub delivery records: one per ``X-GitHub-Delivery`` and one per body, so neither a
redelivery nor a replayed body starts a second job.

A delivery record lives in the idempotency table (key ``github-delivery#<id>``) and moves
``queued`` (the webhook was verified and queued) -> ``processing`` (the packaging function
claimed it, under a lease a crashed claimer loses) -> its outcome (``accepted``, ``untrusted``,
``no-config``, ``invalid``, ``replied``, ...), or back to ``queued`` when processing raised, so
the queue's retry can claim it again. After ``MAX_PROCESSING_ATTEMPTS`` failed attempts, or at
once on a permanent GitHub error (a 4xx other than a rate limit), it becomes ``failed``, and the
message is dropped.

A body record (key ``github-body#<sha256 of the body>``) names the delivery that first brought
those bytes. Both are written in one transaction, so a body already seen under another delivery
id (a captured webhook replayed with a fresh ``X-GitHub-Delivery``; the signature covers the body
only) is a duplicate, as is a delivery id seen before.

Redelivery: GitHub's "Redeliver" button sends the same body under the same delivery id. It is a
duplicate, unless that delivery's record is ``failed``: then both records are written anew (the
body record still names the same delivery) and the event is processed again. A delivery that was
never queued (the S3 write failed) has its records removed (``forget``), so GitHub's own retry is
processed too. Both records expire after ``DELIVERY_TTL_SECONDS``; command comments older than
``webhooks.COMMAND_MAX_AGE_SECONDS`` are refused before that, so a replay after expiry of a
command is stale.
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
MAX_PROCESSING_ATTEMPTS = 5


class Deliveries:
    """Delivery records in the idempotency table (key ``github-delivery#<id>``)."""

    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], float] = time.time):
        self._ddb, self._table, self._clock = dynamodb, table, clock

    @staticmethod
    def _key(delivery: str) -> dict[str, Any]:
        return {"id": value(f"github-delivery#{delivery}")}

    @staticmethod
    def _body_key(body_sha256: str) -> dict[str, Any]:
        return {"id": value(f"github-body#{body_sha256}")}

    def record(self, delivery: str, body_sha256: str) -> bool:
        """True if this delivery is new (or failed before) and its body was not seen under another
        delivery id; False for a duplicate of either kind."""
        now = int(self._clock())
        nonce = uuid.uuid4().hex  # tells our own applied-but-unanswered write from someone else's
        common = {"received_at": value(now), "expiration": value(now + DELIVERY_TTL_SECONDS), "writer": value(nonce)}
        try:
            self._ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": self._table,
                         "Item": {**self._key(delivery), "status": value("queued"), "body_sha256": value(body_sha256),
                                  **common},
                         "ConditionExpression": "attribute_not_exists(id) OR #s = :failed",
                         "ExpressionAttributeNames": {"#s": "status"},
                         "ExpressionAttributeValues": {":failed": value("failed")}}},
                {"Put": {"TableName": self._table,
                         "Item": {**self._body_key(body_sha256), "delivery": value(delivery), **common},
                         "ConditionExpression": "attribute_not_exists(id) OR delivery = :d",
                         "ExpressionAttributeValues": {":d": value(delivery)}}},
            ])
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

    def failed_attempt(self, delivery: str, error: str) -> int:
        """Back to ``queued`` after processing raised (the queue retries); ``failed`` once it has
        failed ``MAX_PROCESSING_ATTEMPTS`` times. Returns the attempts so far."""
        got = self._ddb.update_item(
            TableName=self._table, Key=self._key(delivery),
            UpdateExpression="SET #s = :q, last_error = :e ADD attempts :one",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":q": value("queued"), ":e": value(error[:500]), ":one": value(1)},
            ReturnValues="UPDATED_NEW")
        attempts = int(got.get("Attributes", {}).get("attempts", {}).get("N", "1"))
        if attempts >= MAX_PROCESSING_ATTEMPTS:
            self.finish(delivery, "failed")
        return attempts

    def forget(self, delivery: str, body_sha256: str) -> None:
        """Drop the records of a delivery that could not be queued, so GitHub's retry is not a duplicate."""
        self._ddb.delete_item(TableName=self._table, Key=self._key(delivery))
        try:
            self._ddb.delete_item(TableName=self._table, Key=self._body_key(body_sha256),
                                  ConditionExpression="delivery = :d",
                                  ExpressionAttributeValues={":d": value(delivery)})
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
