"""Lambda entrypoint (``process_webhook``): the HTTP API in front of the engine.

Routes (API Gateway REST proxy events):
    POST /jobs                   signed job submission -> 202 {run_id, trace_id, flow_id, done}
    GET  /runs/{run_id}          signed status request -> 200 run summary
    POST /runs/{run_id}/cancel   signed cancel request -> 202
    POST /runs/{run_id}/approve  IAM-authorized (SigV4) -> the caller approves waiting orders
    POST /runs/{run_id}/reject   IAM-authorized (SigV4) -> the caller rejects waiting orders
    POST /webhooks/github        GitHub-signed webhook -> 202 queued (``lambda_runtime.github.webhooks``)
Every request is authenticated before anything is parsed: our routes by a signature over
timestamp, method, path and body (``intake.signature``), a 401 naming what was wrong (signature
or timestamp) that records nothing. The two routes that change state then record the signature
(``store.replays``): the same signed request sent again within its window is a 409 that starts
nothing.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from lambda_runtime.approvals.logic import Verdict
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.webhooks import GitHubWebhooks
from lambda_runtime.intake import signature
from lambda_runtime.intake.logic import Intake
from lambda_runtime.intake.reply import Reply
from lambda_runtime.logs import logger
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance
from lambda_runtime.store.replays import Replays

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

    def __init__(self, intake: Intake, github: GitHubWebhooks, secrets: SecretCache, replays: Replays, *,
                 webhook_secret_id: str, clock: Callable[[], float] = time.time):
        self.intake = intake
        self.github = github
        self.replays = replays
        self.clock = clock
        self._secrets = secrets
        self._secret_id = webhook_secret_id
        self.embedded = intake.settings.embedded
        self.app = APIGatewayRestResolver()
        self.app.post("/jobs")(self._submit)
        self.app.get("/runs/<run_id>")(self._status)
        self.app.post("/runs/<run_id>/cancel")(self._cancel)
        self.app.post("/runs/<run_id>/approve")(lambda run_id: self._decide(run_id, "approve"))
        self.app.post("/runs/<run_id>/reject")(lambda run_id: self._decide(run_id, "reject"))
        self.app.post("/webhooks/github")(self._github)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if context is not None:
            self.intake.register_lambda_context(context)
        return self.app.resolve(event, context)

    # ---- routes -------------------------------------------------------------------------
    def _submit(self) -> Response[str]:
        raw = self._raw_body()
        refusal = self._refusal("POST", "/jobs", raw, once=True)
        if refusal is not None:
            return _json(refusal)
        headers = self.app.current_event.headers
        reply = self.intake.submit(
            raw, content_type=_header(headers, "Content-Type"), idempotency_key=_header(headers, "Idempotency-Key")
        )
        logger.info("submission", extra={"status": reply.status, "run_id": reply.body.get("run_id")})
        return _json(reply)

    def _status(self, run_id: str) -> Response[str]:
        refusal = self._refusal("GET", f"/runs/{run_id}", b"", once=False)  # a read: replaying it changes nothing
        return _json(refusal or self.intake.status(run_id))

    def _cancel(self, run_id: str) -> Response[str]:
        refusal = self._refusal("POST", f"/runs/{run_id}/cancel", self._raw_body(), once=True)
        return _json(refusal or self.intake.cancel(run_id))

    def _decide(self, run_id: str, verdict: Verdict) -> Response[str]:
        """The reviewer is the caller's IAM principal, as API Gateway verified its SigV4 signature
        (these routes are IAM-authorized on AWS). Only the embedded stack (``iac-ci serve``), which
        has no IAM in front, takes a signed request naming its ``approver``: there the holder of the
        signing key is the operator of the whole local deployment."""
        raw = self._raw_body()
        identity = ((self.app.current_event.raw_event.get("requestContext") or {}).get("identity") or {})
        principal = identity.get("userArn") if isinstance(identity, dict) else None
        if principal:
            reviewer = Reviewer(identity=str(principal), kind="iam", via="api")
        elif self.embedded:
            refusal = self._refusal("POST", f"/runs/{run_id}/{verdict}", raw, once=True)
            if refusal is not None:
                return _json(refusal)
            approver = _approver(raw)
            if approver is None:
                return _json(Reply(400, {"error": "approver: a GitHub login or an IAM principal ARN is required"}))
            reviewer = Reviewer(identity=approver, kind="iam" if approver.startswith("arn:") else "github", via="api")
        else:
            return _json(Reply(403, {"error": "this route needs an IAM-signed (SigV4) request"}))
        reply = self.intake.decide(run_id, verdict, reviewer, raw)
        logger.info("approval decision", extra={"status": reply.status, "run_id": run_id, "verdict": verdict,
                                                "reviewer": reviewer.identity})
        return _json(reply)

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

    def _refusal(self, method: str, path: str, body: bytes, *, once: bool) -> Reply | None:
        """None when the request is signed, fresh and (``once``: a state-changing route) not seen
        before; else the answer. The signature is recorded only once verified, so no one without
        the key can write a record, and before the route acts, so a replay never reaches it."""
        headers = self.app.current_event.headers
        sig = _header(headers, signature.HEADER)
        verdict = signature.verify_request(
            self._secret(self._secret_id), method=method, path=path, body=body,
            timestamp=_header(headers, signature.TIMESTAMP_HEADER), signature=sig, now=self.clock(),
        )
        if not verdict.ok or sig is None:
            return Reply(401, {"error": verdict.message})
        if once and not self.replays.record(sig):
            logger.warning("replayed signed request", extra={"method": method, "path": path})
            return Reply(409, {"error": "this signed request was already received; sign each request anew"})
        return None


def build(settings: Settings, clients: AwsClients, *, clock: Callable[[], float] = time.time) -> Api:
    """The intake as the Lambda function and the embedded stack both run it: one secret cache for
    the job signatures and the GitHub webhook secret, one run acceptance, one replay record."""
    secrets = SecretCache(clients.secrets, max_age=SECRET_MAX_AGE, clock=clock)
    intake = Intake(settings, clients, Acceptance(settings, clients, clock=clock), clock=clock)
    github = GitHubWebhooks(settings, clients, secrets.get, clock=clock)
    replays = Replays(clients.dynamodb, settings.idempotency_table, clock=clock)
    return Api(intake, github, secrets, replays, webhook_secret_id=settings.webhook_secret_id, clock=clock)


def _approver(raw: bytes) -> str | None:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return None
    value = body.get("approver") if isinstance(body, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 2048 else None


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
