"""Talking to a deployed stack's API: signed requests, and following a run to its end.

The stack is found through its CloudFormation outputs (names shared with the construct in
``schema.deployment``); the shared secret is read from Secrets Manager with the caller's
own AWS credentials, so access to a stack is governed by IAM (``grant_submit``).
"""
from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_runtime.intake import order_log, signature
from lambda_runtime.schema import deployment
from lambda_runtime.schema.status import RunStatus


class StackError(RuntimeError):
    pass


class Unreachable(StackError):
    """The API could not be reached or the connection broke: asking again later may succeed (a TLS
    refusal is a plain StackError, since it cannot)."""


@dataclass(frozen=True)
class StackInfo:
    name: str
    api_url: str
    secret_arn: str
    outputs: dict[str, str]

    @classmethod
    def from_cloudformation(cls, name: str, cloudformation: Any) -> StackInfo:
        try:
            stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
        except Exception as exc:
            raise StackError(f"stack '{name}' not found or not readable: {exc}") from None
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        missing = [k for k in (deployment.OUTPUT_API_URL, deployment.OUTPUT_WEBHOOK_SECRET_ARN) if k not in outputs]
        if missing:
            raise StackError(f"stack '{name}' has no output {', '.join(missing)}: is it an iac-ci stack?")
        return cls(name, outputs[deployment.OUTPUT_API_URL].rstrip("/"),
                   outputs[deployment.OUTPUT_WEBHOOK_SECRET_ARN], outputs)


@dataclass(frozen=True)
class SigV4:
    """SigV4 signing for the stack's IAM-authorized routes, with the caller's own credentials."""

    credentials: Any  # botocore Credentials
    region: str

    def headers(self, method: str, url: str, body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
        SigV4Auth(self.credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())


class ApiClient:
    """The stack's HTTP API, each request signed (``intake.signature``) at the moment it is sent.

    Retries (429, 5xx, an unreachable endpoint) sign again with a fresh timestamp: the stack refuses
    a signature it has seen (409). A retried submission is then a new request, and only its
    ``Idempotency-Key`` makes it answer the first run instead of starting another, so ``submit``
    always sends one (a fresh one per call when the caller gives none).
    """

    RETRY_STATUSES = (429, 502, 503, 504)

    def __init__(self, api_url: str, secret: str, *, timeout: float = 30, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, attempts: int = 4,
                 ssl_context: ssl.SSLContext | None = None):
        """``ssl_context``: how HTTPS connections are made (mutual TLS: a client certificate loaded into
        it, and the CA that signed the server's; ``iac_ci.cli.tls``); None: the system's defaults."""
        self._url = api_url.rstrip("/")
        self._ssl_context = ssl_context
        self._secret = secret
        self._timeout = timeout
        self._clock, self._sleep, self._attempts = clock, sleep, attempts

    def submit(self, body: bytes, *, content_type: str = "application/json",
               idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
        """One submission, however many attempts it takes: the attempts share an Idempotency-Key, so a
        retry after a lost answer returns the run the first attempt started."""
        key = idempotency_key or f"iac-ci-{uuid.uuid4().hex}"
        return self._request("POST", "/jobs", body, {"Content-Type": content_type, "Idempotency-Key": key})

    def status(self, run_id: str) -> tuple[int, dict[str, Any]]:
        return self._request("GET", f"/runs/{run_id}", None, {})

    def cancel(self, run_id: str) -> tuple[int, dict[str, Any]]:
        return self._request("POST", f"/runs/{run_id}/cancel", b"{}", {"Content-Type": "application/json"})

    def log(self, run_id: str, order: str, offset: int = 0) -> tuple[int, dict[str, Any]]:
        """``GET /runs/{run_id}/log``: a chunk of ``order``'s masked log from byte ``offset``:
        ``{"text", "next_offset", "size", "status", "complete", ...}`` (``intake.order_log.LogChunk``).
        The query is part of the signed path, so the signature binds the order and the offset."""
        return self._request("GET", order_log.signed_path(run_id, order, str(offset)), None, {})

    def locks(self, include_expired: bool = False) -> tuple[int, dict[str, Any]]:
        """``GET /locks``: ``{"locks": [...]}``, expired ones too with ``include_expired``."""
        return self._request("GET", "/locks", None, {}, query="?all=1" if include_expired else "")

    def release_locks(self, names: list[str] | None = None, holder: str | None = None, reason: str = "",
                      by: str | None = None) -> tuple[int, dict[str, Any]]:
        """``POST /locks/release`` of ``names`` (whoever holds them) or of every lock of ``holder`` (a
        holder key, ``github:owner/repo#N``): ``{"released": [...], "not_held": [...]}``."""
        doc: dict[str, Any] = {"reason": reason}
        if names is not None:
            doc["names"] = names
        if holder is not None:
            doc["holder"] = holder
        if by is not None:
            doc["by"] = by
        return self._request("POST", "/locks/release", json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def decide(self, run_id: str, verdict: str, orders: list[str], *, reason: str = "",
               sigv4: SigV4 | None = None, approver: str | None = None) -> tuple[int, dict[str, Any]]:
        """Approve or reject waiting orders. Against a deployed stack the request is SigV4-signed with
        the caller's AWS credentials (``sigv4``): the stack takes the reviewer from that signature.
        ``iac-ci serve`` has no IAM in front, so there the signed body names the ``approver``."""
        path = f"/runs/{run_id}/{verdict}"
        doc: dict[str, Any] = {"orders": orders, "reason": reason}
        if sigv4 is None:
            body = json.dumps({**doc, "approver": approver}).encode()
            return self._request("POST", path, body, {"Content-Type": "application/json"})
        body = json.dumps(doc).encode()
        return self._send("POST", path, body, lambda: sigv4.headers("POST", self._url + path, body))

    def follow(self, run_id: str, *, poll: float = 2.0, timeout: float | None = None,
               on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll the run until it is final; returns its summary."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code, body = self.status(run_id)
            if code == 200:
                if on_progress is not None:
                    on_progress(body)
                if body.get("status") in {s.value for s in RunStatus if s.terminal}:
                    return body
            elif code not in self.RETRY_STATUSES:
                raise StackError(f"status of run {run_id} failed ({code}): {body.get('error')}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not finished after {timeout}s")
            time.sleep(poll)

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str], *, query: str = "") -> tuple[int, dict[str, Any]]:
        """A signed request; the signature covers ``path``, never the ``query`` (``?...``) after it."""
        return self._send(method, path, body, lambda: {
            **headers, **signature.signed_headers(self._secret, method, path, body, self._clock())}, query=query)

    def _send(self, method: str, path: str, body: bytes | None,
              sign: Callable[[], dict[str, str]], *, query: str = "") -> tuple[int, dict[str, Any]]:
        """Send, retrying transient failures with backoff; every attempt is signed anew."""
        for attempt in range(self._attempts):
            last = attempt == self._attempts - 1
            req = urllib.request.Request(self._url + path + query, data=body, method=method, headers=sign())
            try:
                with urllib.request.urlopen(req, timeout=self._timeout, context=self._ssl_context) as resp:
                    return resp.status, _json(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code not in self.RETRY_STATUSES or last:
                    return exc.code, _json(exc.read())
            except ssl.SSLError as exc:  # refused in the TLS handshake (TLS 1.3 reports it at the first read)
                raise StackError(_tls_refusal(self._url, exc)) from None
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, ssl.SSLError):  # a certificate problem: retrying cannot help
                    raise StackError(_tls_refusal(self._url, exc.reason)) from None
                if last:
                    raise Unreachable(f"cannot reach {self._url}: {exc.reason}") from None
            except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                # the connection broke or timed out after the request went out: the API may have acted on
                # it, so only a read or a request it recognises when sent again (Idempotency-Key) is retried
                if last or not (method == "GET" or req.get_header("Idempotency-key")):
                    raise Unreachable(f"cannot reach {self._url}: the connection broke "
                                      f"({type(exc).__name__}: {exc or 'no answer'})") from None
            self._sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")


def _tls_refusal(url: str, exc: ssl.SSLError) -> str:
    return (f"TLS with {url} failed: {exc.reason or exc} (mutual TLS: pass --cert/--key with a certificate the "
            "API trusts, and --ca if its server certificate is not publicly trusted)")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"error": raw[:500].decode(errors="replace")}
    return data if isinstance(data, dict) else {"error": str(data)[:500]}
