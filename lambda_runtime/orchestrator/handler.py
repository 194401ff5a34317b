"""Lambda entrypoint: S3 callback events (via SQS) wake the orchestrator for their runs."""

from __future__ import annotations

from functools import cache
from typing import Any

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.aws.s3_events import process_by_subject
from lambda_runtime.logs import logger
from lambda_runtime.orchestrator.dispatch import AwsDispatcher
from lambda_runtime.orchestrator.engine import Orchestrator
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings
from lambda_runtime.vcs.base import NoopVcs, VcsProvider


def run_of(key: str) -> str | None:
    ref = layout.parse_callback_key(key)
    return ref.run_id if ref else None


@cache
def _orchestrator() -> Orchestrator:
    settings = Settings.from_env()
    clients = AwsClients(region=settings.region)
    dispatcher = AwsDispatcher(
        clients,
        worker_function=settings.worker_function,
        codebuild_project=settings.codebuild_project,
        grace_seconds=settings.watchdog_grace_seconds,
    )
    vcs: VcsProvider = NoopVcs()
    if settings.github_enabled:  # imported only when used: PyGithub adds ~100 ms to a cold start
        from lambda_runtime.vcs.github import GitHubVcs

        vcs = GitHubVcs(settings, clients)
    return Orchestrator(settings, clients, dispatcher, vcs=vcs)


def process(event: dict[str, Any], orchestrator: Orchestrator) -> dict[str, Any]:
    return process_by_subject(event, run_of, orchestrator.wake)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, _orchestrator())
