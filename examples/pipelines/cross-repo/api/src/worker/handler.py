"""acme's queue worker (function acme-worker): one SQS batch of order events."""
import json

VERSION = "1"


def handler(event, context):
    failed = []
    for record in event.get("Records", []):
        try:
            json.loads(record["body"])
        except (KeyError, ValueError):
            failed.append({"itemIdentifier": record.get("messageId", "")})
    return {"batchItemFailures": failed}
