"""Counting AWS API calls at the embedded endpoint, by service and action.

A WSGI wrapper around moto's server records every request it receives: the engine's boto3
calls and the workers' presigned requests alike. It lives beside the server (in its process)
because only the server sees every caller: the engine, the workers and sops. Queue polling
(ReceiveMessage, DeleteMessage*, ChangeMessageVisibility*) is told apart: on AWS the event
source mapping does it, not the engine.
"""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

POLLING = frozenset({("sqs", "ReceiveMessage"), ("sqs", "DeleteMessage"), ("sqs", "DeleteMessageBatch"),
                     ("sqs", "ChangeMessageVisibility"), ("sqs", "ChangeMessageVisibilityBatch")})
TARGET_SERVICES = {"DynamoDB_20120810": "dynamodb", "AWSStepFunctions": "stepfunctions", "AmazonSQS": "sqs",
                   "TrentService": "kms", "secretsmanager": "secretsmanager", "AmazonSSM": "ssm"}


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.write_units = 0  # DynamoDB write request units implied by the requests
        self._lock = threading.Lock()

    def install(self) -> None:
        """Wrap moto's WSGI application (in the process that serves it)."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        original = DomainDispatcherApplication.__call__
        counter = self

        def counting(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
            counter.record(environ)
            return original(app, environ, start_response)

        DomainDispatcherApplication.__call__ = counting  # type: ignore[method-assign,assignment]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.write_units = 0

    def record(self, environ: dict[str, Any]) -> None:
        key, units = classify(environ)
        with self._lock:
            self.calls[key] += 1
            self.write_units += units

    def snapshot(self) -> CallCounts:
        with self._lock:
            return CallCounts(Counter(self.calls), self.write_units)


class CallCounts:
    """What a counter saw, as the parent process receives it (a JSON round trip)."""

    def __init__(self, calls: Counter[tuple[str, str]], write_units: int) -> None:
        self.calls = calls
        self.write_units = write_units

    def engine_calls(self) -> Counter[tuple[str, str]]:
        return Counter({k: v for k, v in self.calls.items() if k not in POLLING and k[0] != "moto-api"})

    def polling(self) -> int:
        return sum(v for k, v in self.calls.items() if k in POLLING)

    def to_json(self) -> dict[str, Any]:
        return {"calls": [[s, a, n] for (s, a), n in self.calls.items()], "write_units": self.write_units}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CallCounts:
        return cls(Counter({(s, a): n for s, a, n in doc["calls"]}), doc["write_units"])


def classify(environ: dict[str, Any]) -> tuple[tuple[str, str], int]:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/moto-api"):
        return ("moto-api", path), 0
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, action = target.partition(".")
        service = TARGET_SERVICES.get(prefix, prefix.lower())
        return (service, action), _write_units(service, action, environ)
    method = environ.get("REQUEST_METHOD", "GET")
    body = _peek_body(environ)
    if body and b"Action=" in body[:200]:  # query protocol (STS)
        action = parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
        return ("sts", action), 0
    query = environ.get("QUERY_STRING", "")
    parts = [p for p in path.split("/") if p]
    if method == "GET" and len(parts) <= 1:
        return ("s3", "ListObjectsV2" if "list-type=2" in query else "ListObjects"), 0
    s3_action = {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject",
                 "POST": "PostObject"}.get(method, method)
    return ("s3", s3_action), 0


def _peek_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if not length or length > 65536:
        return b""
    body: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _write_units(service: str, action: str, environ: dict[str, Any]) -> int:
    if service != "dynamodb":
        return 0
    if action in ("PutItem", "UpdateItem", "DeleteItem"):
        return 1
    if action in ("TransactWriteItems", "BatchWriteItem"):
        try:
            doc = json.loads(_peek_body(environ) or b"{}")
        except ValueError:
            return 0
        if action == "TransactWriteItems":
            return 2 * len(doc.get("TransactItems", []))
        return sum(len(v) for v in doc.get("RequestItems", {}).values())
    return 0
