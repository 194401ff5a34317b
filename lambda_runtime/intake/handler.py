"""Lambda entrypoint (``process_webhook``): the HTTP API in front of the engine.

Routes (API Gateway REST proxy events):
    POST /jobs                   signed job submission -> 202 {run_id, trace_id, flow_id, done}
    GET  /runs/{run_id}          signed status request -> 200 run summary
    POST /runs/{run_id}/cancel   signed cancel request -> 202
    POST /runs/{run_id}/approve  IAM-authorized (SigV4) -> the caller approves waiting orders
    POST /runs/{run_id}/reject   IAM-authorized (SigV4) -> the caller rejects waiting orders
    GET  /runs/{run_id}/logs     a signed link (``intake.log_links``) -> 200 text/html, the masked logs
    GET  /runs/{run_id}/log      signed (query included) -> 200 a chunk of one order's log (``intake.order_log``)
    GET  /locks                  signed -> 200 {"locks": [...]} (``?all=1``: expired ones too)
    POST /locks/release          signed -> 200 {"released": [...], "not_held": [...]}
    POST /webhooks/github        GitHub-signed webhook -> 202 queued (``lambda_runtime.github.webhooks``)
Every request is authenticated before anything is parsed: our routes by a signature over
timestamp, method, path and body (``intake.signature``), a 401 naming what was wrong (signature
or timestamp) that records nothing. The routes that change state then record the signature
(``store.replays``): the same signed request sent again within its window is a 409 that starts
nothing. The logs route is opened by a browser, which sends no headers of ours: the link's own
expiry and signature authorize it (a 403 that reads nothing else when they do not).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from lambda_runtime.approvals.logic import Verdict
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.webhooks import GitHubWebhooks
from lambda_runtime.intake import log_links, order_log, signature
from lambda_runtime.intake.logic import Intake, Page
from lambda_runtime.intake.reply import Reply
from lambda_runtime.logs import logger
from lambda_runtime.schema import deployment
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance
from lambda_runtime.store.replays import Replays

if TYPE_CHECKING:
    from lambda_runtime.intake.client_certs import ClientCertCheck

SECRET_MAX_AGE = 300
# the logs page: a browser renders it, so it may load nothing (no script, no image, no frame), is
# never sniffed as another type, leaks no link through Referer and is cached by nobody but the reader
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_CACHE = "private, max-age=60"


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

    client_certs: ClientCertCheck | None = None  # mutual TLS: every request's certificate is checked first

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
        self.app.get("/runs/<run_id>/logs")(self._logs)
        self.app.get("/runs/<run_id>/log")(self._order_log)
        self.app.get("/locks")(self._locks)
        self.app.post("/locks/release")(self._release_locks)
        self.app.post("/webhooks/github")(self._github)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if context is not None:
            self.intake.register_lambda_context(context)
        refused = self.client_certs.refusal(event) if self.client_certs is not None else None
        return refused or self.app.resolve(event, context)

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

    def _order_log(self, run_id: str) -> Response[str]:
        """A read, signed with its query (``order_log.signed_path``): the signature binds the order
        and the offset too, so a captured request reads nothing else."""
        params = self._query()
        path = order_log.signed_path(run_id, order_log.last_value(params, "order"),
                                     order_log.last_value(params, "offset"))
        refusal = self._refusal("GET", path, b"", once=False)
        return _json(refusal or self.intake.order_log(run_id, params))

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

    def _locks(self) -> Response[str]:
        refusal = self._refusal("GET", "/locks", b"", once=False)  # a read; ``all`` only widens it
        if refusal is not None:
            return _json(refusal)
        include_expired = (self._query().get("all") or [""])[-1].lower() in ("1", "true", "yes")
        return _json(self.intake.locks(include_expired=include_expired))

    def _release_locks(self) -> Response[str]:
        raw = self._raw_body()
        refusal = self._refusal("POST", "/locks/release", raw, once=True)
        if refusal is not None:
            return _json(refusal)
        reply = self.intake.release_locks(raw)
        logger.info("locks released", extra={"status": reply.status, "released": reply.body.get("released")})
        return _json(reply)

    def _logs(self, run_id: str) -> Response[str]:
        """A log link: the run id's form, then the link's signature and expiry under the log-link
        secret, and only then the run. A parameter given twice makes the link malformed (which copy
        was signed?)."""
        secret_id = self.intake.settings.log_link_secret_id
        if not secret_id:
            return _page(Page(404, "log links are not enabled on this deployment\n"))
        params = self._query()
        if any(len(v) > 1 for k, v in params.items() if k in ("expires", "sig", "order")):
            return self._link_refused(run_id, log_links.MALFORMED)
        expires, sig, order = (params.get(k, [None])[0] for k in ("expires", "sig", "order"))
        problem = log_links.check_format(run_id, order, expires, sig)
        if problem is not None or expires is None:
            return self._link_refused(run_id, problem or log_links.MALFORMED)
        secret = self._secret(secret_id)
        problem = log_links.verify(secret, run_id, order, expires, sig, self.clock())
        if problem is not None:
            return self._link_refused(run_id, problem)
        page = self.intake.logs_page(
            run_id, order,
            link_query=lambda o: log_links.query(secret, run_id, expires_at=int(expires), order=o))
        logger.info("logs page", extra={"status": page.status, "run_id": run_id, "order": order})
        return _page(page)

    def _link_refused(self, run_id: str, problem: str) -> Response[str]:
        logger.info("log link refused", extra={"reason": problem, "run_id": run_id[:64]})
        return _page(Page(403, f"this link cannot be opened: {problem}\n"))

    def _github(self) -> Response[str]:
        reply = self.github.receive(self._raw_body(), self.app.current_event.headers or {})
        logger.info("github webhook", extra={"status": reply.status})
        return _json(reply)

    # ---- helpers ------------------------------------------------------------------------
    def _secret(self, secret_id: str) -> str:
        return self._secrets.get(secret_id)

    def _query(self) -> dict[str, list[str]]:
        """The query string as API Gateway decoded it, every value of every parameter."""
        event = self.app.current_event
        multi = event.multi_value_query_string_parameters or {}
        if multi:
            return {k: list(v or []) for k, v in multi.items()}
        return {k: [v] for k, v in (event.query_string_parameters or {}).items()}

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
    api = Api(intake, github, secrets, replays, webhook_secret_id=settings.webhook_secret_id, clock=clock)
    if os.environ.get(deployment.ENV_CLIENT_CERTS_TABLE):  # mutual TLS: imported only where it is on
        from lambda_runtime.intake.client_certs import ClientCertCheck

        api.client_certs = ClientCertCheck.from_env(clients.dynamodb, clock=clock)
    return api


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


def _page(page: Page) -> Response[str]:
    """A page a browser shows: the logs (cached briefly, by the reader only) or why there are none."""
    cache_control = PAGE_CACHE if page.status == 200 else "no-store"
    return Response(status_code=page.status, content_type=page.content_type, body=page.body,
                    headers={**PAGE_HEADERS, "Cache-Control": cache_control, **page.headers})


@cache
def _api() -> Api:
    settings = Settings.from_env()
    return build(settings, AwsClients(region=settings.region))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _api().handle(event, context)
