"""Signed requests already received: one record per signature, so a captured request sent again
within its signing window changes nothing.

A signature covers its timestamp (``intake.signature``), and a timestamp is accepted while it is
within ``MAX_SKEW_SECONDS`` of the clock either way: a signature first seen at ``now`` carries a
timestamp of at most ``now + MAX_SKEW_SECONDS`` and so passes the timestamp check until at most
``now + 2 * MAX_SKEW_SECONDS``. The record lives that long, plus a margin (TTL ``expiration``;
DynamoDB deletes expired items late, never early); after that the timestamp check alone refuses it.

Records share the idempotency table (key ``signed-request#<hex>``) with Powertools' idempotency
records and GitHub delivery records; the prefix keeps them apart.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from lambda_runtime.aws.clients import is_conditional_failure
from lambda_runtime.intake.signature import MAX_SKEW_SECONDS
from lambda_runtime.store.codec import value

KEY_PREFIX = "signed-request#"
EXPIRY_MARGIN_SECONDS = 60  # clocks of two intake instances differ a little
RECORD_SECONDS = 2 * MAX_SKEW_SECONDS + EXPIRY_MARGIN_SECONDS


class Replays:
    """Seen signatures in the idempotency table; ``record`` is the one conditional write."""

    def __init__(self, dynamodb: Any, table: str, *, clock: Callable[[], float] = time.time):
        self._ddb, self._table, self._clock = dynamodb, table, clock

    @staticmethod
    def _key(signature: str) -> dict[str, Any]:
        return {"id": value(KEY_PREFIX + signature.strip().removeprefix("sha256="))}

    def record(self, signature: str) -> bool:
        """True the first time ``signature`` is seen, False for a replay. Call it only for a verified
        request, so only the holder of the key can write records."""
        now = self._clock()
        expiration = math.ceil(now) + RECORD_SECONDS
        nonce = uuid.uuid4().hex  # tells our own applied-but-unanswered write (an SDK retry) from a replay
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={**self._key(signature), "kind": value("signed-request"), "received_at": value(int(now)),
                      "expiration": value(expiration), "writer": value(nonce)},
                ConditionExpression="attribute_not_exists(id)",
            )
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return self._written_by(signature, nonce)
            raise

    def seen(self, signature: str) -> bool:
        """Whether ``signature`` is recorded: what a replay of it would be refused by."""
        return self._get(signature) is not None

    def _written_by(self, signature: str, nonce: str) -> bool:
        item = self._get(signature)
        return item is not None and item.get("writer", {}).get("S") == nonce

    def _get(self, signature: str) -> dict[str, Any] | None:
        item = self._ddb.get_item(TableName=self._table, Key=self._key(signature), ConsistentRead=True).get("Item")
        return item or None
