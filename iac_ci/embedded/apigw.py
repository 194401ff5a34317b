"""API Gateway REST proxy events, built the way API Gateway builds them, for local callers."""

from __future__ import annotations

import base64
import uuid
from typing import Any


def proxy_event(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    *,
    multi_query: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """``query`` holds one value per parameter (the last, as API Gateway's ``queryStringParameters``);
    ``multi_query``, when given, every value (``multiValueQueryStringParameters``)."""
    text: str | None = None
    is_b64 = False
    if body is not None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
    hdrs = dict(headers or {})
    return {
        "resource": path,
        "path": path,
        "httpMethod": method.upper(),
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or ({k: [v] for k, v in query.items()} if query else None),
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "embedded",
            "stage": "prod",
            "httpMethod": method.upper(),
            "path": f"/prod{path}",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "resourcePath": path,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": hdrs.get("User-Agent", "")},
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }
