"""Lambda entrypoint of the worker: the invoke payload is a ``WorkerPayload``.

Lambda freezes or kills the sandbox at its own timeout, leaving no chance to report; the
commands therefore get the remaining invocation time minus a margin for the artifact, log
and result uploads, so a slow order still ends as a reported ``timed_out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from lambda_runtime.logs import logger
from lambda_runtime.schema.contract import WorkerPayload
from lambda_runtime.worker.hardening import make_undumpable
from lambda_runtime.worker.runner import execute_order, parse_payload

REPORTING_MARGIN_SECONDS = 30


class LambdaContext(Protocol):
    """The one part of Lambda's context object the worker relies on."""

    def get_remaining_time_in_millis(self) -> int: ...


def handler(event: Mapping[str, object] | str, context: LambdaContext | None) -> dict[str, Any]:
    """Run the order; the return value (without the log tail) is for a synchronous caller only,
    the real report is the result object in S3."""
    payload = parse_payload(event)  # raises without echoing values: they are capabilities
    make_undumpable()  # the function's credentials and the URLs stay out of the commands' reach
    logger.append_keys(run_id=payload.run_id, order=payload.order)
    try:
        deadline = deadline_seconds(payload, context)
        logger.info("order starting", extra={"attempt": payload.attempt, "deadline_seconds": deadline})
        result = execute_order(payload, deadline_seconds=deadline).result
        logger.info("order finished", extra={"status": result.status.value, "exit_code": result.exit_code})
        return result.model_dump(mode="json", exclude={"log_tail"})
    finally:
        logger.remove_keys(["run_id", "order"])  # warm invocations must not inherit them


def deadline_seconds(payload: WorkerPayload, context: LambdaContext | None) -> float | None:
    """The time the commands may use: the order's timeout, cut short by what Lambda has left."""
    if context is None:
        return None
    remaining = context.get_remaining_time_in_millis() / 1000 - REPORTING_MARGIN_SECONDS
    return min(float(payload.timeout), remaining)
