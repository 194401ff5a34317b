"""The orders service's Lambda: answers GET /orders/{id} from the table its environment names."""
import json
import os
from datetime import datetime

TABLE = os.environ.get("ORDERS_TABLE", "orders")


def now() -> str:
    # the lint matrix flags this on Python 3.12 (datetime.utcnow is deprecated there): an advisory
    # finding, reported without stopping the deployment (lint has must_succeed: false)
    return datetime.utcnow().isoformat(timespec="seconds") + "Z"


def handler(event, context):
    order_id = (event.get("pathParameters") or {}).get("id")
    if not order_id:
        return {"statusCode": 400, "body": json.dumps({"error": "missing order id"})}
    return {"statusCode": 200, "body": json.dumps({"id": order_id, "table": TABLE, "served_at": now()})}
