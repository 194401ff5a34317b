"""The watchdog state machine: one definition file shared by the construct and the embedded runner.

One execution per order (and one per run for the job timeout). Its name is derived from the
run and the subject and its input holds an absolute deadline, so starting it again (a retry,
a repair after a crash) is a no-op: Step Functions returns the same execution.
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from lambda_runtime.schema import layout

DEFINITION_FILE = "definition.json"


def definition_text() -> str:
    return resources.files(__package__).joinpath(DEFINITION_FILE).read_text()


def definition() -> dict[str, Any]:
    return json.loads(definition_text())


def execution_name(run_id: str, subject: str) -> str:
    """Deterministic, valid (<= 80 chars, [A-Za-z0-9-_]) execution name for a run's order."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", subject)
    name = f"{run_id}-{safe}"
    if len(name) > 80 or safe != subject:
        digest = hashlib.sha256(subject.encode()).hexdigest()[:12]
        name = f"{run_id}-{safe[: 80 - len(run_id) - 14]}-{digest}"
    return name[:80]


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name


def timestamp(epoch: float) -> str:
    """The ISO-8601 form ``TimestampPath`` wants (UTC, whole seconds, rounded up)."""
    return datetime.fromtimestamp(int(epoch) + (epoch % 1 > 0), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def execution_input(*, deadline: float, bucket: str, key: str, body: str, wake_key: str) -> str:
    return json.dumps(
        {"deadline": timestamp(deadline), "bucket": bucket, "key": key, "body": body, "wake_key": wake_key},
        sort_keys=True,
    )


def start(sfn: Any, state_machine_arn: str, *, run_id: str, subject: str, deadline: float, bucket: str, key: str,
          body: str) -> str:
    """Start (idempotently) the watchdog for ``subject`` of ``run_id``; returns the execution ARN.

    At ``deadline`` it writes ``body`` to ``key`` unless something is there already, and in
    that case wakes the orchestrator with an object of its own, in case the notification of
    the existing one was lost.
    """
    name = execution_name(run_id, subject)
    wake_key = layout.control_key(run_id, f"wake-{name[len(run_id) + 1:]}")
    try:
        resp = sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=name,
            input=execution_input(deadline=deadline, bucket=bucket, key=key, body=body, wake_key=wake_key),
        )
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") != "ExecutionAlreadyExists":
            raise
        return execution_arn(state_machine_arn, name)  # this subject is guarded already
    return str(resp["executionArn"])


def start_job_timeout(sfn: Any, state_machine_arn: str, *, bucket: str, run_id: str, deadline: float) -> str:
    """The run's own watchdog: at the job deadline, the ``job_timeout`` signal for the orchestrator."""
    return start(sfn, state_machine_arn, run_id=run_id, subject="job", deadline=deadline, bucket=bucket,
                 key=layout.control_key(run_id, layout.SIGNAL_JOB_TIMEOUT),
                 body=json.dumps({"signal": layout.SIGNAL_JOB_TIMEOUT, "run_id": run_id}))
