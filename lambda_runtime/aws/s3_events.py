"""S3 event notifications delivered through SQS: unpack keys, report partial batch failures.

Keys arrive URL-encoded (as real S3 sends them); the first message after configuring a bucket
is an ``s3:TestEvent`` with no records. Both are handled here once for every consumer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from lambda_runtime.logs import logger


def keys_by_message(event: dict[str, Any]) -> dict[str, list[str]]:
    """messageId -> object keys (still URL-encoded) for every SQS record in a Lambda event."""
    out: dict[str, list[str]] = {}
    for record in event.get("Records", []):
        keys: list[str] = []
        try:
            body = json.loads(record.get("body") or "{}")
        except ValueError:
            body = {}
        for s3rec in body.get("Records", []) if isinstance(body, dict) else []:
            key = s3rec.get("s3", {}).get("object", {}).get("key")
            if isinstance(key, str) and str(s3rec.get("eventName", "ObjectCreated")).startswith("ObjectCreated"):
                keys.append(key)
        out[record["messageId"]] = keys
    return out


def process_by_subject(
    event: dict[str, Any], subject_of: Callable[[str], str | None], work: Callable[[str], object]
) -> dict[str, list[dict[str, str]]]:
    """Call ``work`` once per distinct subject (run id) in the batch; fail only that subject's messages.

    Returns the ``batchItemFailures`` answer of an SQS event source mapping with
    ``ReportBatchItemFailures``: failed messages come back after the visibility timeout.
    """
    messages: dict[str, list[str]] = {}
    for message_id, keys in keys_by_message(event).items():
        for key in keys:
            subject = subject_of(key)
            if subject:
                messages.setdefault(subject, []).append(message_id)
    failures: list[str] = []
    for subject, ids in messages.items():
        try:
            outcome = work(subject)
            logger.info("processed", extra={"run_id": subject, "outcome": str(outcome)})
        except Exception:
            logger.exception("processing failed; messages go back to the queue", extra={"run_id": subject})
            failures.extend(ids)
    return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(failures)]}
