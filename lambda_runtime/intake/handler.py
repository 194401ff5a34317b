"""Lambda entrypoint (``process_webhook``): the HTTP API in front of the engine.

Routes (API Gateway REST proxy events):
    POST /jobs                   signed job submission -> 202 {run_id, trace_id, flow_id, done}
    GET  /runs/{run_id}          signed status request -> 200 run summary
    POST /runs/{run_id}/cancel   signed cancel request -> 202
    POST /webhooks/github        GitHub-signed webhook -> 202 queued (``lambda_runtime.github.webhooks``)
Every request is authenticated before anything is parsed; a bad signature is a 401 that
records nothing.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.webhooks import GitHubWebhooks
from lambda_runtime.intake import signature
from lambda_runtime.intake.logic import Intake
from lambda_runtime.intake.reply import Reply
from lambda_runtime.logs import logger
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance

SECRET_MAX_AGE = 300


class SecretCache:
    """Secret values kept for ``max_age`` seconds, so a warm function does not call Secrets
    Manager per request but still sees a rotation within minutes. (Powertools' parameters
    utility does the same but imports every provider it has: ~100 ms of cold start.)"""

    def __init__(self, client: Any, *, max_age: float, clock: Callable[[], float] = time.time):
        self._client, self._max_age, self._clock = client, max_age, clock
        self._values: dict[str, tuple[float, str]] = {}

    def get(self, secret_id: str) -> str:
        hit = self._values.get(secret_id)
        now = self._clock()
        if hit is None or now - hit[0] > self._max_age:
            hit = (now, str(self._client.get_secret_value(SecretId=secret_id)["SecretString"]))
            self._values[secret_id] = hit
        return hit[1]


class Api:
    """The router plus its dependencies; one per process (or per embedded stack), made by ``build``."""

    def __init__(self, intake: Intake, github: GitHubWebhooks, secrets: SecretCache, *, webhook_secret_id: str,
                 clock: Callable[[], float] = time.time):
        self.intake = intake
        self.github = github
        self.clock = clock
        self._secrets = secrets
        self._secret_id = webhook_secret_id
        self.app = APIGatewayRestResolver()
        self.app.post("/jobs")(self._submit)
        self.app.get("/runs/<run_id>")(self._status)
        self.app.post("/runs/<run_id>/cancel")(self._cancel)
        self.app.post("/webhooks/github")(self._github)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if context is not None:
            self.intake.register_lambda_context(context)
        return self.app.resolve(event, context)

    # ---- routes -------------------------------------------------------------------------
    def _submit(self) -> Response[str]:
        raw = self._raw_body()
        if not self._verified(raw):
            return _json(Reply(401, {"error": "bad or missing signature"}))
        headers = self.app.current_event.headers
        reply = self.intake.submit(
            raw, content_type=_header(headers, "Content-Type"), idempotency_key=_header(headers, "Idempotency-Key")
        )
        logger.info("submission", extra={"status": reply.status, "run_id": reply.body.get("run_id")})
        return _json(reply)

    def _status(self, run_id: str) -> Response[str]:
        ts = _header(self.app.current_event.headers, signature.TIMESTAMP_HEADER) or ""
        data = signature.read_request_bytes("GET", f"/runs/{run_id}", ts)
        if not self._fresh(ts) or not self._verified(data):
            return _json(Reply(401, {"error": "bad or missing signature"}))
        return _json(self.intake.status(run_id))

    def _cancel(self, run_id: str) -> Response[str]:
        raw = self._raw_body()
        if not self._verified(raw):
            return _json(Reply(401, {"error": "bad or missing signature"}))
        try:
            body = json.loads(raw or b"{}")
            ts = str(body.get("ts", "")) if isinstance(body, dict) else ""
        except ValueError:
            ts = ""
        if not self._fresh(ts) or (isinstance(body, dict) and body.get("run_id") not in (None, run_id)):
            return _json(Reply(401, {"error": "stale or mismatched cancel request"}))
        return _json(self.intake.cancel(run_id))

    def _github(self) -> Response[str]:
        reply = self.github.receive(self._raw_body(), self.app.current_event.headers or {})
        logger.info("github webhook", extra={"status": reply.status})
        return _json(reply)

    # ---- helpers ------------------------------------------------------------------------
    def _secret(self, secret_id: str) -> str:
        return self._secrets.get(secret_id)

    def _raw_body(self) -> bytes:
        event = self.app.current_event
        if event.body is None:
            return b""
        return base64.b64decode(event.body) if event.is_base64_encoded else event.body.encode()

    def _verified(self, data: bytes) -> bool:
        secret = self._secret(self._secret_id)
        return signature.verify(secret, data, _header(self.app.current_event.headers, signature.HEADER))

    def _fresh(self, ts: str) -> bool:
        try:
            return abs(self.clock() - float(ts)) <= signature.MAX_SKEW_SECONDS
        except ValueError:
            return False


def build(settings: Settings, clients: AwsClients, *, clock: Callable[[], float] = time.time) -> Api:
    """The intake as the Lambda function and the embedded stack both run it: one secret cache for
    the job signatures and the GitHub webhook secret, one run acceptance."""
    secrets = SecretCache(clients.secrets, max_age=SECRET_MAX_AGE, clock=clock)
    intake = Intake(settings, clients, Acceptance(settings, clients, clock=clock), clock=clock)
    github = GitHubWebhooks(settings, clients, secrets.get, clock=clock)
    return Api(intake, github, secrets, webhook_secret_id=settings.webhook_secret_id, clock=clock)


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    for k, v in (headers or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def _json(reply: Reply) -> Response[str]:
    return Response(status_code=reply.status, content_type="application/json", body=json.dumps(reply.body))


@cache
def _api() -> Api:
    settings = Settings.from_env()
    return build(settings, AwsClients(region=settings.region))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _api().handle(event, context)
