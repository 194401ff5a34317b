"""The watchdog state machine: one definition file shared by the construct and the embedded runner.

One execution per order (and one per run for the job timeout). Its name is derived from the
run and order, so starting it twice is a no-op (Step Functions returns the same execution).
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from typing import Any

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


def execution_input(*, wait_seconds: int, bucket: str, key: str, body: str) -> str:
    return json.dumps({"wait_seconds": int(wait_seconds), "bucket": bucket, "key": key, "body": body})


def start(
    sfn: Any, state_machine_arn: str, *, run_id: str, subject: str, wait_seconds: int, bucket: str, key: str, body: str
) -> str:
    """Start (idempotently) the watchdog for ``subject`` of ``run_id``; returns the execution ARN."""
    resp = sfn.start_execution(
        stateMachineArn=state_machine_arn,
        name=execution_name(run_id, subject),
        input=execution_input(wait_seconds=wait_seconds, bucket=bucket, key=key, body=body),
    )
    return str(resp["executionArn"])
