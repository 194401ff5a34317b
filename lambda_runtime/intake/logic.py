"""Job intake: parse and validate a submitted body, then accept it; status and cancel.

The answer never waits for clones or encryption: accepting a run (``store.acceptance``) is the
watchdog, one conditional PutItem and one S3 PutObject (whose event starts packaging). What
arrives over HTTP is checked here, so invalid input changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from typing import Any

import yaml

from lambda_runtime.approvals.logic import Approvals, Verdict
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.intake.reply import Reply
from lambda_runtime.job import yaml_text
from lambda_runtime.job.validate import JobValidationError, Problem, parse_job
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance, AcceptInProgress, KeyReused, body_hash
from lambda_runtime.store.cancel import request_cancel

MAX_IDEMPOTENCY_KEY = 255


class BadRequest(Exception):
    def __init__(self, status: int, message: str, problems: list[Problem] | None = None):
        self.status = status
        self.problems = problems or []
        super().__init__(message)

    def reply(self) -> Reply:
        body: dict[str, Any] = {"error": str(self)}
        if self.problems:
            body["problems"] = [p.as_dict() for p in self.problems]
        return Reply(self.status, body)


def parse_submission(raw: bytes, content_type: str | None = None) -> Any:
    """JSON or YAML job, or the earlier design's ``{"job_parameters_b64": ...}`` envelope."""
    text = _decode(raw)
    is_yaml = bool(content_type and "yaml" in content_type.lower())
    doc = _load(text, is_yaml)
    if isinstance(doc, dict) and "job_parameters_b64" in doc:
        encoded = doc["job_parameters_b64"]
        if not isinstance(encoded, str) or len(doc) != 1:
            raise BadRequest(400, "job_parameters_b64 must be the only field, a base64 string")
        try:
            inner = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, "job_parameters_b64 is not valid base64") from None
        doc = _load(_decode(inner), None)
    return doc


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "body is not UTF-8") from None


def _load(text: str, is_yaml: bool | None) -> Any:
    if not text.strip():
        raise BadRequest(400, "empty body")
    if not is_yaml:
        try:
            return json.loads(text)
        except RecursionError:
            raise BadRequest(400, "body is nested too deeply") from None
        except ValueError:
            if is_yaml is False:
                raise BadRequest(400, "body is not valid JSON") from None
    try:
        return yaml_text.load(text)
    except yaml.YAMLError as exc:
        raise BadRequest(400, f"body is neither JSON nor YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # well-formed YAML that cannot be constructed
        raise BadRequest(400, f"body has a value YAML cannot represent: {str(exc)[:200]}") from None



class Intake:
    """What the HTTP routes do once the request is authenticated."""

    def __init__(self, settings: Settings, clients: AwsClients, acceptance: Acceptance, *,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clients = clients
        self.clock = clock
        self.acceptance = acceptance
        self.store = acceptance.store
        self.approvals = Approvals(clients, self.store, settings.internal_bucket, settings.deployment_policy,
                                   clock=clock)

    def register_lambda_context(self, context: Any) -> None:
        self.acceptance.register_lambda_context(context)

    def submit(self, raw: bytes, *, content_type: str | None = None, idempotency_key: str | None = None) -> Reply:
        """Validate and accept a job body that has already passed signature checks."""
        try:
            if len(raw) > self.settings.max_body_bytes:
                raise BadRequest(413, f"body larger than {self.settings.max_body_bytes} bytes")
            if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY):
                raise BadRequest(400, f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} characters")
            doc = parse_submission(raw, content_type)
            try:
                job = parse_job(doc, self.settings.validation_policy())
            except JobValidationError as exc:
                raise BadRequest(400, "invalid job", exc.problems) from None
        except BadRequest as exc:
            return exc.reply()
        job_doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        if len(json.dumps(job_doc)) > 4 * self.settings.max_body_bytes:  # defaults filled in, never expanded
            return BadRequest(413, "the job is larger than the submission size limit").reply()
        try:
            ack = self.acceptance.accept(job_doc, body_sha256=body_hash(raw), idempotency_key=idempotency_key)
        except KeyReused:
            return Reply(422, {"error": "Idempotency-Key was already used with a different body"})
        except AcceptInProgress:
            return Reply(409, {"error": "a submission with this Idempotency-Key is in progress; retry shortly"})
        return Reply(202, ack)

    def status(self, run_id: str) -> Reply:
        snap = self.store.load(run_id)
        if snap.run is None:
            return Reply(404, {"error": f"run '{run_id}' not found"})
        from lambda_runtime.summary import run_summary

        return Reply(200, run_summary(snap))

    def decide(self, run_id: str, verdict: Verdict, reviewer: Reviewer, raw: bytes) -> Reply:
        """``POST /runs/{id}/approve|reject``: body ``{"orders": [...], "reason": "..."}`` (both optional)."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return Reply(400, {"error": "body is not valid JSON"})
        problems = []
        if not isinstance(body, dict):
            body, problems = {}, ["body must be a JSON object"]
        orders, reason = body.get("orders", []), body.get("reason", "")
        if not isinstance(orders, list) or not all(isinstance(o, str) and o for o in orders) or len(orders) > 1000:
            problems.append("orders: must be a list of order names")
        if not isinstance(reason, str) or len(reason) > 500:
            problems.append("reason: must be a string of at most 500 characters")
        unknown = sorted(set(body) - {"orders", "reason", "approver"})
        problems += [f"{k}: unknown field" for k in unknown]
        if problems:
            return Reply(400, {"error": "invalid decision", "problems": problems})
        outcome = self.approvals.decide(run_id, verdict, reviewer, orders, reason=reason)
        return Reply(outcome.status, outcome.as_dict())

    def cancel(self, run_id: str) -> Reply:
        run = self.store.get_run(run_id)
        if run is None:
            return Reply(404, {"error": f"run '{run_id}' not found"})
        if not request_cancel(
            self.store, self.clients.s3, bucket=self.settings.internal_bucket, run_id=run_id, now=self.clock()
        ):
            return Reply(409, {"error": f"run '{run_id}' already finished", "status": run.status.value})
        return Reply(202, {"run_id": run_id, "status": "cancelling"})
