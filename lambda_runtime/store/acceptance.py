"""Accepting a run: what makes a validated job a run, once per idempotency key.

Accepting is three writes, in this order: the job-timeout watchdog (so no run can outlive its
deadline, even one whose packaging never happens), the run item (a ``RunRecord`` in status
``accepted``), and the job object whose S3 event starts packaging. Nothing slow happens here:
the HTTP intake answers right after, and the packaging function accepts a pull request's job
the same way, so both go through this one module instead of one importing the other.

With an idempotency key the acceptance runs under Powertools idempotency (a record in the
idempotency table, keyed by the key and checked against the body's hash): a repeat with the
same body answers the first run, a repeat with another body is refused (``KeyReused``), a
repeat while the first is still being accepted is told to retry (``AcceptInProgress``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any, TypedDict

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from lambda_runtime import watchdog
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.job.model import Job
from lambda_runtime.observability import trace
from lambda_runtime.observability.legs import Legs
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import RunRecord
from lambda_runtime.schema.status import RunStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.runs import RunStore

IDEMPOTENCY_EXPIRY_SECONDS = 24 * 3600
# Powertools prefixes every idempotency record with "<Lambda function name>.<function path>"; the
# path is pinned to where acceptance lived before it moved here, so records written by an earlier
# version keep answering their repeats for the rest of their expiry.
IDEMPOTENCY_FUNCTION_PATH = "lambda_runtime.intake.logic.Intake._accept"


class KeyReused(Exception):
    """The idempotency key was already used with a different body."""


class AcceptInProgress(Exception):
    """A submission with this idempotency key is being accepted right now."""


class Ack(TypedDict):
    """What the submitter learns about its accepted run (the 202 body of ``POST /jobs``)."""

    run_id: str
    trace_id: str
    flow_id: str
    status: str
    orders: int
    done: str


class RunIds(TypedDict):
    run_id: str
    trace_id: str
    flow_id: str


def new_ids(username: str, flow_label: str, now: float) -> RunIds:
    """Run id plus the seed's trace and flow id formats: the run's trace id is its intake leg's
    (``observability.trace``), ``<run id>:<accept epoch>``."""
    core = secrets.token_hex(8)
    return {"run_id": core, "trace_id": str(trace.run_trace(core, now)), "flow_id": f"{username}:{core}-{flow_label}"}


def body_hash(raw: bytes) -> str:
    """The payload hash idempotency compares: a repeat must carry the same bytes."""
    return hashlib.sha256(raw).hexdigest()


class Acceptance:
    """Run acceptance for one process (the intake function, the packaging function, or an
    embedded stack): one persistence layer, one idempotent wrapper."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        *,
        store: RunStore | None = None,
        clock: Callable[[], float] = time.time,
        legs: Legs | None = None,
    ):
        self.settings = settings
        self.clients = clients
        self.clock = clock
        self.legs = legs or Legs.from_env(clock=clock)  # the intake leg's segment (X-Ray)
        self.store = store or RunStore(clients.dynamodb, settings.orders_table, settings.events_table, clock=clock,
                                       event_ttl_days=settings.event_ttl_days)
        persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=clients.dynamodb)
        self._config = IdempotencyConfig(
            event_key_jmespath="idempotency_key",
            payload_validation_jmespath="body_sha256",
            expires_after_seconds=IDEMPOTENCY_EXPIRY_SECONDS,
            raise_on_no_idempotency_key=False,
        )
        prefix = f"{os.getenv('AWS_LAMBDA_FUNCTION_NAME', 'test-func')}.{IDEMPOTENCY_FUNCTION_PATH}"
        self._accept_once: Callable[..., Ack] = idempotent_function(
            data_keyword_argument="submission", persistence_store=persistence, config=self._config,
            key_prefix=prefix,
        )(self._accept)

    def register_lambda_context(self, context: Any) -> None:
        """Lets Powertools bound an in-progress record by the invocation's remaining time."""
        self._config.register_lambda_context(context)

    def accept(
        self,
        job_doc: dict[str, Any],
        *,
        body_sha256: str,
        idempotency_key: str | None = None,
        run_fields: dict[str, Any] | None = None,
    ) -> Ack:
        """Accept a validated job document (``Job`` dumped by alias, without ``None``s).

        ``run_fields`` are more ``RunRecord`` fields (where the run reports: ``vcs``,
        ``installation_id``). Raises ``KeyReused`` or ``AcceptInProgress`` for a key in conflict.
        """
        submission: dict[str, Any] = {"job": job_doc, "idempotency_key": idempotency_key,
                                      "body_sha256": body_sha256}
        if run_fields:
            submission["run_fields"] = run_fields
        if idempotency_key is None:
            return self._accept(submission)
        try:
            return self._accept_once(submission=submission)
        except IdempotencyValidationError:
            raise KeyReused(idempotency_key) from None
        except IdempotencyAlreadyInProgressError:
            raise AcceptInProgress(idempotency_key) from None

    def accept_job(self, job: Job, *, idempotency_key: str, run_fields: dict[str, Any]) -> Ack:
        """Accept a job built inside the engine (a VCS event), idempotently; its hash is over the
        canonical JSON of the job, as there is no submitted body."""
        doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        return self.accept(doc, body_sha256=body_hash(json.dumps(doc, sort_keys=True).encode()),
                           idempotency_key=idempotency_key, run_fields=run_fields)

    def _accept(self, submission: dict[str, Any]) -> Ack:
        job = Job.model_validate(submission["job"])
        now = self.clock()
        username = job.username or "unknown"
        ids = new_ids(username, job.name, now)
        # the run's first leg: its trace is the run's, its segment the root of the run's X-Ray trace
        with self.legs.leg("intake", ids["run_id"], trace=trace.parse(ids["trace_id"]),
                           run_trace=ids["trace_id"]) as leg:
            ack = self._create(submission, job, ids, now)
            leg.outcome = ack["status"]
        return ack

    def _create(self, submission: dict[str, Any], job: Job, ids: RunIds, now: float) -> Ack:
        """The three writes of an acceptance (see the module's docstring)."""
        username = job.username or "unknown"
        run_id = ids["run_id"]
        deadline = now + job.timeout
        # the job timeout is armed before anything else exists, so no run can outlive it, even
        # one whose packaging never happens (a lost message, a poison job in the dead-letter queue)
        watchdog.start_job_timeout(self.clients.sfn, self.settings.watchdog_arn, bucket=self.settings.internal_bucket,
                                   run_id=run_id, deadline=deadline)
        self.store.create_run(
            RunRecord(
                run_id=run_id,
                trace_id=ids["trace_id"],
                flow_id=ids["flow_id"],
                status=RunStatus.ACCEPTED,
                name=job.name,
                username=username,
                repo=job.repo,
                pr_number=job.pr_number,
                commit=job.commit,
                timeout=job.timeout,
                deadline=deadline,
                created_at=now,
                order_total=len(job.orders),
                idempotency_key=submission.get("idempotency_key"),
                params=job.param_env() or None,
                upstream_run_id=job.upstream.run_id if job.upstream else None,
                upstream_job=job.upstream.job if job.upstream else None,
                chain=list(job.upstream.chain) if job.upstream else None,
                **submission.get("run_fields", {}),
            )
        )
        self.clients.s3.put_object(
            Bucket=self.settings.internal_bucket,
            Key=layout.job_key(run_id),
            Body=json.dumps(submission["job"]).encode(),
            ContentType="application/json",
        )
        return {
            "run_id": run_id,
            "trace_id": ids["trace_id"],
            "flow_id": ids["flow_id"],
            "status": RunStatus.ACCEPTED.value,
            "orders": len(job.orders),
            "done": f"s3://{self.settings.done_bucket}/{layout.done_key(run_id)}",
        }
