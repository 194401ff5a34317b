"""Lambda entrypoint of the worker: the invoke payload is a ``WorkerPayload``.

Lambda freezes or kills the sandbox at its own timeout, leaving no chance to report; the
commands therefore get the remaining invocation time minus a margin for the artifact, log
and result uploads, so a slow order still ends as a reported ``timed_out``.

Lambda reuses the sandbox for later invocations, of any run: on the first invocation the
worker claims it (``enter_sandbox``), and every order runs through ``run_sandboxed``, which
cleans it before and after. A sandbox that cannot be cleaned is retired: the process exits
after the order is reported, and Lambda starts the next invocation in a fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from lambda_runtime import sops
from lambda_runtime.logs import logger
from lambda_runtime.schema.contract import WorkerPayload
from lambda_runtime.worker import sandbox
from lambda_runtime.worker.hardening import make_undumpable
from lambda_runtime.worker.runner import parse_payload, run_sandboxed

REPORTING_MARGIN_SECONDS = 30


class LambdaContext(Protocol):
    """The one part of Lambda's context object the worker relies on."""

    def get_remaining_time_in_millis(self) -> int: ...


def enter_sandbox(kind: sandbox.SandboxKind) -> None:
    """Once per execution environment (idempotent), before any order: this process becomes the
    keeper of the sandbox (a child subreaper that kills whatever an order leaves), its AWS
    credentials move from its environment block into its memory, and it becomes undumpable.
    ``lambda`` on Lambda (adds the sweep of every process of this uid and emptying /tmp);
    ``local`` for the embedded runner's execution environments."""
    if sandbox.claimed():
        return
    sandbox.claim(kind)
    make_undumpable()
    sops.hold_credentials()


def handler(event: Mapping[str, object] | str, context: LambdaContext | None) -> dict[str, Any]:
    """Run the order; the return value (without the log tail) is for a synchronous caller only,
    the real report is the result object in S3."""
    payload = parse_payload(event)  # raises without echoing values: they are capabilities
    if sandbox.on_lambda():
        enter_sandbox("lambda")
    make_undumpable()  # the function's credentials and the URLs stay out of the commands' reach
    logger.append_keys(run_id=payload.run_id, order=payload.order, trace=payload.trace_id)  # the order leg's trace
    try:
        deadline = deadline_seconds(payload, context)
        logger.info("order starting", extra={"attempt": payload.attempt, "deadline_seconds": deadline})
        outcome = run_sandboxed(payload, deadline_seconds=deadline)
        result = outcome.run.result
        logger.info("order finished", extra={"status": result.status.value, "exit_code": result.exit_code})
        if not outcome.clean:
            logger.error("retiring this execution environment: it could not be cleaned")
            sandbox.retire()
        return result.model_dump(mode="json", exclude={"log_tail"})
    finally:
        logger.remove_keys(["run_id", "order"])  # warm invocations must not inherit them


def deadline_seconds(payload: WorkerPayload, context: LambdaContext | None) -> float | None:
    """The time the commands may use: the order's timeout, cut short by what Lambda has left."""
    if context is None:
        return None
    remaining = context.get_remaining_time_in_millis() / 1000 - REPORTING_MARGIN_SECONDS
    return min(float(payload.timeout), remaining)
