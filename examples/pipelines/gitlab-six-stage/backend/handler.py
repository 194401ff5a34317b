"""webapp's API: GET /health and GET /greeting?name=..."""
import json


def handler(event, context):
    path = event.get("rawPath", "/")
    if path == "/health":
        return {"statusCode": 200, "body": json.dumps({"ok": True})}
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    return {"statusCode": 200, "body": json.dumps({"greeting": f"hello, {name}"})}
