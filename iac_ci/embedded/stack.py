"""The whole engine on the embedded AWS: the same handlers, wired as the construct wires them.

intake (Api) --job.json--> S3 --event--> SQS --pump--> packaging --wake--> S3 --event--> SQS
--pump--> orchestrator --dispatch--> local worker processes --presigned PUT--> S3 --event--> ...
and the watchdog state machine executed by moto.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iac_ci.embedded.apigw import proxy_event
from iac_ci.embedded.local_dispatch import LocalDispatcher
from iac_ci.embedded.provision import provision
from iac_ci.embedded.pump import QueuePump
from iac_ci.embedded.server import EmbeddedAws
from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.intake import signature
from lambda_runtime.intake.handler import build as build_intake
from lambda_runtime.intake.log_links import LogLinks
from lambda_runtime.orchestrator.handler import build as build_orchestrator
from lambda_runtime.orchestrator.handler import process as orchestrator_process
from lambda_runtime.packaging.handler import build as build_packaging
from lambda_runtime.packaging.handler import process as packaging_process
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings
from lambda_runtime.store.runs import RunStore
from lambda_runtime.vcs.base import VcsProvider, provider_for


class EmbeddedStack:
    def __init__(
        self,
        aws: EmbeddedAws,
        *,
        prefix: str = "iac-ci",
        settings_overrides: dict[str, Any] | None = None,
        vcs: VcsProvider | None = None,
        log_dir: Path | None = None,
        orchestrator_concurrency: int = 4,
        checkpoint: Callable[[str], None] | None = None,
    ):
        self.aws = aws
        for k, v in aws.env().items():  # boto3 in this process and sops in its children
            os.environ.setdefault(k, v)
        os.environ["AWS_ENDPOINT_URL"] = aws.endpoint
        self.clients = AwsClients(region=aws.region)
        self.webhook_secret = secrets.token_hex(32)
        overrides = {"watchdog_grace_seconds": 15, "lock_lease_seconds": 60, **(settings_overrides or {})}
        self.settings, self.queues = provision(
            self.clients, prefix=prefix, region=aws.region, webhook_secret=self.webhook_secret, overrides=overrides
        )
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="iac-ci-workers-"))
        self.dispatcher = LocalDispatcher(aws.env(), log_dir=self.log_dir)
        # packaging and the orchestrator report through one provider (with GitHub: one comment per run)
        self.vcs = vcs or provider_for(self.settings, self.clients)
        self.api = build_intake(self.settings, self.clients)
        self.packager, self.github_events = build_packaging(self.settings, self.clients, vcs=self.vcs)
        self.orchestrator = build_orchestrator(
            self.settings, self.clients, dispatcher=self.dispatcher, vcs=self.vcs, checkpoint=self._checkpoint
        )
        self._user_checkpoint = checkpoint
        self._finished = threading.Condition()
        self.store = RunStore(self.clients.dynamodb, self.settings.orders_table, self.settings.events_table)
        self._pumps = [
            QueuePump(
                self.clients.sqs,
                self.queues.packaging_url,
                lambda e: packaging_process(e, self.packager, self.github_events),
                concurrency=2,
                name="packaging",
            ),
            QueuePump(
                self.clients.sqs,
                self.queues.callbacks_url,
                lambda e: orchestrator_process(e, self.orchestrator),
                concurrency=orchestrator_concurrency,
                name="orchestrator",
            ),
        ]

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> EmbeddedStack:
        for p in self._pumps:
            p.start()
        return self

    def close(self) -> None:
        for p in self._pumps:
            p.signal_stop()  # all at once: each may be in a one-second long poll
        for p in self._pumps:
            p.stop()
        self.dispatcher.reap()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the API, called as API Gateway would ------------------------------------------
    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        resp = self.api.handle(proxy_event(method, path, body, headers), None)
        return int(resp["statusCode"]), json.loads(resp.get("body") or "{}")

    def signed_request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``request`` signed now with the stack's key, as ``iac-ci submit`` signs it."""
        signed = {**(headers or {}), **signature.signed_headers(self.webhook_secret, method, path, body, time.time())}
        return self.request(method, path, body, signed)

    def submit(
        self, job: dict[str, Any] | bytes, *, idempotency_key: str | None = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        body = job if isinstance(job, bytes) else json.dumps(job).encode()
        headers = {"Content-Type": content_type}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self.signed_request("POST", "/jobs", body, headers)

    def cancel(self, run_id: str) -> tuple[int, dict[str, Any]]:
        return self.signed_request("POST", f"/runs/{run_id}/cancel", b"{}", {"Content-Type": "application/json"})

    def status(self, run_id: str) -> tuple[int, dict[str, Any]]:
        return self.signed_request("GET", f"/runs/{run_id}")

    def log_links(self, *, clock: Callable[[], float] = time.time) -> LogLinks:
        """Links to this stack's run logs, as its GitHub provider makes them (none without ``api_url``)."""
        return LogLinks(self.settings, self.secret, clock)

    def secret(self, secret_id: str) -> str:
        return str(self.clients.secrets.get_secret_value(SecretId=secret_id)["SecretString"])

    def done(self, run_id: str) -> dict[str, Any] | None:
        try:
            obj = self.clients.s3.get_object(Bucket=self.settings.done_bucket, Key=layout.done_key(run_id))
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(obj["Body"].read())

    def _checkpoint(self, point: str) -> None:
        if self._user_checkpoint is not None:
            self._user_checkpoint(point)
        if point == "finalized":  # a run may be done: wake waiters now instead of at their next poll
            with self._finished:
                self._finished.notify_all()

    def wait(
        self,
        run_id: str,
        *,
        timeout: float = 120,
        poll: float = 1.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the run's done object exists (the contract), reporting progress each ``poll``."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.done(run_id)
            if done is not None:
                return done
            if on_progress is not None:
                code, body = self.status(run_id)
                if code == 200:
                    on_progress(body)
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not finish within {timeout}s")
            with self._finished:
                self._finished.wait(poll)

    @property
    def pump_errors(self) -> list[BaseException]:
        return [e for p in self._pumps for e in p.errors]


__all__ = ["EmbeddedStack", "Settings"]
