"""acme's HTTP API (function acme-api): GET /health, GET /orders/{id}."""
import json

VERSION = "1"


def handler(event, context):
    if event.get("rawPath") == "/health":
        return {"statusCode": 200, "body": json.dumps({"ok": True, "version": VERSION})}
    order_id = (event.get("pathParameters") or {}).get("id", "")
    return {"statusCode": 200 if order_id else 404, "body": json.dumps({"id": order_id})}
