"""Talking to a deployed stack's API: signed requests, and following a run to its end.

The stack is found through its CloudFormation outputs (names shared with the construct in
``schema.deployment``); the shared secret is read from Secrets Manager with the caller's
own AWS credentials, so access to a stack is governed by IAM (``grant_submit``).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_runtime.intake import signature
from lambda_runtime.schema import deployment
from lambda_runtime.schema.status import RunStatus


class StackError(RuntimeError):
    pass


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


class ApiClient:
    def __init__(self, api_url: str, secret: str, *, timeout: float = 30):
        self._url = api_url.rstrip("/")
        self._secret = secret
        self._timeout = timeout

    def submit(self, body: bytes, *, content_type: str = "application/json",
               idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": content_type, signature.HEADER: signature.sign(self._secret, body)}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self._request("POST", "/jobs", body, headers)

    def status(self, run_id: str) -> tuple[int, dict[str, Any]]:
        ts = str(time.time())
        path = f"/runs/{run_id}"
        sig = signature.sign(self._secret, signature.read_request_bytes("GET", path, ts))
        return self._request("GET", path, None, {signature.HEADER: sig, signature.TIMESTAMP_HEADER: ts})

    def cancel(self, run_id: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"run_id": run_id, "ts": time.time()}).encode()
        return self._request("POST", f"/runs/{run_id}/cancel", body,
                             {"Content-Type": "application/json", signature.HEADER: signature.sign(self._secret, body)})

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
            elif code not in (429, 502, 503, 504):
                raise StackError(f"status of run {run_id} failed ({code}): {body.get('error')}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not finished after {timeout}s")
            time.sleep(poll)

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(self._url + path, data=body, method=method, headers=headers)
        for attempt in range(4):
            try:
                with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                    return resp.status, _json(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 502, 503, 504) and attempt < 3:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                return exc.code, _json(exc.read())
            except urllib.error.URLError as exc:
                if attempt < 3:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                raise StackError(f"cannot reach {self._url}: {exc.reason}") from None
        raise AssertionError("unreachable")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"error": raw[:500].decode(errors="replace")}
    return data if isinstance(data, dict) else {"error": str(data)[:500]}
