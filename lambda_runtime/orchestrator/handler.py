"""Lambda entrypoint: S3 callback events (via SQS) wake the orchestrator for their runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Any

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.aws.s3_events import process_by_subject
from lambda_runtime.logs import logger
from lambda_runtime.notify.events import Notifier
from lambda_runtime.orchestrator.dispatch import AwsDispatcher, Dispatcher
from lambda_runtime.orchestrator.engine import Orchestrator
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings
from lambda_runtime.vcs.base import VcsProvider, provider_for


def build(
    settings: Settings,
    clients: AwsClients,
    *,
    dispatcher: Dispatcher | None = None,
    vcs: VcsProvider | None = None,
    clock: Callable[[], float] = time.time,
    checkpoint: Callable[[str], None] | None = None,
    notifier: Notifier | None = None,
) -> Orchestrator:
    """The orchestrator as the Lambda function and the embedded stack both run it; the embedded
    stack passes its local dispatcher (no Lambda or CodeBuild to start) and its fault seam.
    State changes are published on ``settings.event_bus`` (none when it is empty)."""
    if dispatcher is None:
        dispatcher = AwsDispatcher(clients, worker_function=settings.worker_function,
                                   codebuild_project=settings.codebuild_project,
                                   grace_seconds=settings.watchdog_grace_seconds)
    extra = {"checkpoint": checkpoint} if checkpoint is not None else {}
    return Orchestrator(settings, clients, dispatcher, vcs=vcs or provider_for(settings, clients), clock=clock,
                        notifier=notifier or Notifier.from_settings(settings, clients, clock=clock), **extra)


def run_of(key: str) -> str | None:
    ref = layout.parse_callback_key(key)
    return ref.run_id if ref else None


def process(event: dict[str, Any], orchestrator: Orchestrator) -> dict[str, Any]:
    return process_by_subject(event, run_of, orchestrator.wake)


@cache
def _orchestrator() -> Orchestrator:
    settings = Settings.from_env()
    return build(settings, AwsClients(region=settings.region))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, _orchestrator())
