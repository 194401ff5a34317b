"""The whole engine on the embedded AWS: the same handlers, wired as the construct wires them.

intake (Api) --job.json--> S3 --event--> SQS --pump--> packaging --wake--> S3 --event--> SQS
--pump--> orchestrator --dispatch--> local worker processes --presigned PUT--> S3 --event--> ...
and the watchdog state machine executed by moto.

Every run and order state change the engine publishes (``notify.events``) goes to the stack's
event bus, whose rule sends it to the events queue; the stack drains that queue into
``events_log`` (``<log_dir>/events.jsonl``), one EventBridge event per line, as a Slack or
SNS rule would receive it. The orchestrator's EMF metrics go to ``metrics_log`` beside it
(``<log_dir>/metrics.jsonl``), never to stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
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
from iac_ci.embedded.scheduler import LocalScheduler
from iac_ci.embedded.server import EmbeddedAws
from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.intake import signature
from lambda_runtime.intake.handler import build as build_intake
from lambda_runtime.intake.log_links import LogLinks
from lambda_runtime.logs import logger
from lambda_runtime.observability.metrics import EmfWriter
from lambda_runtime.orchestrator.handler import build as build_orchestrator
from lambda_runtime.orchestrator.handler import process as orchestrator_process
from lambda_runtime.packaging.handler import build as build_packaging
from lambda_runtime.packaging.handler import process as packaging_process
from lambda_runtime.schema import layout
from lambda_runtime.schema.events import RUN_STATE_CHANGE
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
        prewarm: int = 0,
    ):
        """``prewarm``: Lambda environments started before the resources are made, as provisioned
        concurrency would have them ready (``iac-ci run`` asks for as many as its first orders)."""
        self.aws = aws
        for k, v in aws.env().items():  # boto3 in this process and sops in its children
            os.environ.setdefault(k, v)
        os.environ["AWS_ENDPOINT_URL"] = aws.endpoint
        self.clients = AwsClients(region=aws.region)
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="iac-ci-workers-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._own_log_dir = log_dir is None
        self.dispatcher = LocalDispatcher(aws.env(), log_dir=self.log_dir)
        if prewarm:
            self.dispatcher.prewarm(prewarm)
        self.webhook_secret = secrets.token_hex(32)
        overrides = {"watchdog_grace_seconds": 15, "lock_lease_seconds": 60, **(settings_overrides or {})}
        self.settings, self.queues = provision(
            self.clients, prefix=prefix, region=aws.region, webhook_secret=self.webhook_secret, overrides=overrides
        )
        self.events_log = self.log_dir / "events.jsonl"
        self.metrics_log = self.log_dir / "metrics.jsonl"  # the orchestrator's EMF documents, one per line
        self._events_lock = threading.Lock()
        # packaging and the orchestrator report through one provider (with GitHub: one comment per run)
        self.vcs = vcs or provider_for(self.settings, self.clients)
        self.api = build_intake(self.settings, self.clients)
        self.packager, self.github_events = build_packaging(self.settings, self.clients, vcs=self.vcs)
        self.orchestrator = build_orchestrator(
            self.settings, self.clients, dispatcher=self.dispatcher, vcs=self.vcs, checkpoint=self._checkpoint
        )
        self.orchestrator.emf = EmfWriter.to_file(self.metrics_log, namespace=f"IacCi/{prefix}")  # not stdout
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
        # EventBridge Scheduler's part: fires the schedules the engine made (``iac-ci serve`` ticks it
        # with the wall clock; a test calls ``scheduler.tick(now)`` with its own)
        self.scheduler = LocalScheduler(
            self.clients.scheduler, self.clients.sqs, group=self.settings.schedule_group,
            queue_url=self.queues.packaging_url, queue_arn=self.settings.schedule_queue_arn,
        ) if self.settings.schedules_enabled else None
        # kept apart from ``_pumps`` (the engine's own), which tests rewire
        self._events_pump = (QueuePump(self.clients.sqs, self.queues.events_url, self._log_events, concurrency=2,
                                       name="events", batch_ack=True) if self.queues.events_url else None)

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> EmbeddedStack:
        for p in self._all_pumps:
            p.start()
        return self

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        for p in self._all_pumps:
            p.signal_stop()  # all at once: each may be in a one-second long poll
        for p in self._all_pumps:
            p.stop()
        self._drain_events()
        self.dispatcher.reap()

    def remove_own_files(self) -> None:
        """Remove the temporary folder the stack made for itself (never one it was given), once nobody
        reads it any more: ``close`` keeps it, since what is in it (the events, the workers' output) is
        read after the consumers stopped, as the secret canary does."""
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    @property
    def _all_pumps(self) -> list[QueuePump]:
        return [*self._pumps, *([self._events_pump] if self._events_pump else [])]

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
        """Block until the run's done object exists (the contract), reporting progress each ``poll``.

        The done object is written before the run item is finalized (so a crash in between is
        retried, never lost); a caller that reads the store next must not see the moment between
        the two, so the wait also covers the finalized flag."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.done(run_id)
            if done is not None:
                record = self.store.get_run(run_id)
                if record is None or record.finalized:
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
        return [e for p in self._all_pumps for e in p.errors]

    # ---- the events log -----------------------------------------------------------------
    def events(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The events logged so far (optionally of one run), in the order they were received."""
        with self._events_lock:
            try:
                lines = self.events_log.read_text().splitlines()
            except FileNotFoundError:
                return []
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if run_id is None or e.get("detail", {}).get("run_id") == run_id]

    def wait_events(self, run_id: str, *, timeout: float = 15) -> list[dict[str, Any]]:
        """The run's events once its final run event is logged (it is published after the done object)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(run_id)
            if any(e.get("detail-type") == RUN_STATE_CHANGE and e["detail"].get("final") for e in found):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no final event for run {run_id} within {timeout}s")
            time.sleep(0.2)

    def _log_events(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The events queue's handler: each message is one EventBridge event, appended as a line."""
        lines = []
        for record in batch["Records"]:
            try:
                lines.append(json.dumps(json.loads(record["body"]), sort_keys=True) + "\n")
            except ValueError:
                logger.warning("not an event; dropped", extra={"message_id": record.get("messageId")})
        with self._events_lock:
            self.events_log.parent.mkdir(parents=True, exist_ok=True)
            with self.events_log.open("a") as out:
                out.writelines(lines)
        return {}

    def _drain_events(self) -> None:
        """What the events queue still holds once the pumps stopped, so the log is complete after ``close``."""
        if not self.queues.events_url:
            return
        sqs, url = self.clients.sqs, self.queues.events_url
        deadline = time.monotonic() + 60  # bounded by time, not by count: a 5,000-order run has more than 1,000
        try:
            while time.monotonic() < deadline:
                messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
                if not messages.get("Messages"):
                    return
                self._log_events({"Records": [{"messageId": m["MessageId"], "body": m["Body"]}
                                              for m in messages["Messages"]]})
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages["Messages"])])
        except Exception:  # the endpoint is going away: the log keeps what it has
            logger.debug("events not drained", exc_info=True)


__all__ = ["EmbeddedStack", "Settings"]
