"""Throttling and 5xx answers injected *through botocore's own retry path*.

A ``before-send`` handler that returns a response short-circuits the HTTP send: botocore then
parses that response exactly as if AWS had sent it, and its retry handler (standard mode, as
``AwsClients`` configures) decides whether to retry. That is what a throttled or failing AWS
endpoint looks like to the engine. (botocore's ``Stubber`` raises errors past the retry
logic, so it cannot show whether the engine survives retries.)

The injected request never reaches moto, so a fault never half-applies a write: this models
"refused before it was processed" (throttling, 503 from the front door), not lost responses.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse

from lambda_runtime.aws.clients import AwsClients

# (HTTP status, error code) per protocol family; all are retryable in botocore's standard mode
JSON_FAULTS = (
    (400, "ThrottlingException"),
    (500, "InternalServerError"),
    (503, "ServiceUnavailable"),
)
DYNAMODB_FAULTS = (
    (400, "ThrottlingException"),
    (400, "ProvisionedThroughputExceededException"),
    (500, "InternalServerError"),
    (503, "ServiceUnavailable"),
)
S3_FAULTS = (
    (503, "SlowDown"),
    (500, "InternalError"),
    (503, "ServiceUnavailable"),
)
QUERY_FAULTS = (
    (400, "Throttling"),
    (500, "InternalFailure"),
)

ENGINE_SERVICES = ("dynamodb", "s3", "sqs", "stepfunctions", "secretsmanager", "ssm", "kms", "sts")


class _Body:
    """The ``raw`` object AWSResponse reads its content from."""

    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_kw: Any) -> Iterable[bytes]:
        yield self._data


def error_response(url: str, protocol: str, service: str, status: int, code: str) -> AWSResponse:
    """An AWS error answer in the wire format of ``protocol``."""
    message = f"injected {code} (fault test)"
    if protocol == "json":
        prefix = {"dynamodb": "com.amazonaws.dynamodb.v20120810#"}.get(service, "")
        body = json.dumps({"__type": prefix + code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": code,
                   "x-amzn-RequestId": "fault-injection"}
    elif protocol == "rest-xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
                "<RequestId>fault-injection</RequestId></Error>").encode()
        headers = {"Content-Type": "application/xml", "x-amz-request-id": "fault-injection"}
    else:  # query (STS): the ErrorResponse envelope
        kind = "Sender" if status < 500 else "Receiver"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                "<RequestId>fault-injection</RequestId></ErrorResponse>").encode()
        headers = {"Content-Type": "text/xml"}
    return AWSResponse(url, status, headers, _Body(body))


@dataclass
class AwsFaults:
    """Inject faults into a client set.

    ``first_n``: the first N calls of every (service, operation) fail (each operation is hit,
    however rarely the engine calls it). ``fraction``: then each further call fails with this
    probability, drawn from a generator seeded with ``seed``.
    """

    first_n: int = 0
    fraction: float = 0.0
    seed: int = 1234
    services: tuple[str, ...] = ENGINE_SERVICES
    skip_operations: frozenset[str] = frozenset()
    injected: Counter = field(default_factory=Counter)  # (service, operation, code) -> count
    calls: Counter = field(default_factory=Counter)  # (service, operation) -> count
    enabled: bool = True

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._seen: Counter = Counter()
        self._per_service: Counter = Counter()
        self._installed: list[tuple[Any, Any]] = []

    def install(self, clients: AwsClients) -> AwsFaults:
        for service in self.services:
            client = clients.client(service)
            handler = self._handler_for(service, client.meta.service_model.protocol)
            client.meta.events.register("before-send", handler)
            self._installed.append((client, handler))
        return self

    def uninstall(self) -> None:
        for client, handler in self._installed:
            client.meta.events.unregister("before-send", handler)
        self._installed.clear()

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    def by_service(self) -> Counter:
        out: Counter = Counter()
        for (service, _op, _code), n in self.injected.items():
            out[service] += n
        return out

    def _handler_for(self, service: str, protocol: str) -> Any:
        faults = {"dynamodb": DYNAMODB_FAULTS, "s3": S3_FAULTS, "sts": QUERY_FAULTS}.get(service, JSON_FAULTS)

        def before_send(request: Any, **kwargs: Any) -> AWSResponse | None:
            operation = str(kwargs.get("event_name", "")).rsplit(".", 1)[-1]
            if not self.enabled or operation in self.skip_operations:
                return None
            with self._lock:
                self.calls[(service, operation)] += 1
                self._seen[(service, operation)] += 1
                seen = self._seen[(service, operation)]
                fail = seen <= self.first_n or (self.fraction > 0 and self._rng.random() < self.fraction)
                if not fail:
                    return None
                status, code = faults[self._per_service[service] % len(faults)]  # each kind, in turn, per service
                self._per_service[service] += 1
                self.injected[(service, operation, code)] += 1
            return error_response(request.url, protocol, service, status, code)

        return before_send


class LostResponses:
    """The request reaches AWS and is applied, but its answer is lost (a 500 after the commit, or a
    read timeout): botocore's retry sends it again. DynamoDB documents exactly this for an
    InternalServerError ("the operation may or may not have succeeded"). Only requests whose body
    satisfies ``match`` are affected, ``times`` times in all."""

    def __init__(self, service: str, operation: str, match: Any, *, times: int = 1):
        self.service, self.operation, self.match, self.remaining = service, operation, match, times
        self.lost: list[int] = []  # status codes of the applied requests whose answers were dropped
        self._lock = threading.Lock()
        self._http: Any = None

    def install(self, clients: AwsClients) -> LostResponses:
        from botocore.httpsession import URLLib3Session

        self._http = URLLib3Session()
        client = clients.client(self.service)
        protocol = client.meta.service_model.protocol
        service_id = client.meta.service_model.service_id.hyphenize()

        def before_send(request: Any, **_kw: Any) -> AWSResponse | None:
            raw = request.body
            if hasattr(raw, "read"):  # a streamed body: peek, then rewind for the real send
                pos = raw.tell()
                body = raw.read()
                raw.seek(pos)
            else:
                body = raw.encode() if isinstance(raw, str) else (raw or b"")
            with self._lock:
                if self.remaining <= 0 or not self.match(body):
                    return None
                self.remaining -= 1
            applied = self._http.send(request)  # the request really happens ...
            with self._lock:
                self.lost.append(applied.status_code)
            return error_response(request.url, protocol, self.service, 500, "InternalServerError")  # ... unseen

        client.meta.events.register(f"before-send.{service_id}.{self.operation}", before_send)
        return self
