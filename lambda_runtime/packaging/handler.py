"""Lambda entrypoint (``init_job``): accepted jobs (S3 ``jobs/`` events via SQS) get packaged."""

from __future__ import annotations

from functools import cache
from typing import Any

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.aws.s3_events import process_by_subject
from lambda_runtime.logs import logger
from lambda_runtime.packaging.logic import Packager
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings
from lambda_runtime.vcs.base import NoopVcs


@cache
def _components() -> tuple[Packager, Any]:
    settings = Settings.from_env()
    clients = AwsClients(region=settings.region)
    if not settings.github_enabled:
        return Packager(settings, clients, vcs=NoopVcs()), None
    # imported only when used: PyGithub adds ~100 ms to a cold start
    from lambda_runtime.intake.logic import Intake
    from lambda_runtime.packaging.github_events import GitHubEvents
    from lambda_runtime.vcs.github import GitHubVcs

    vcs = GitHubVcs(settings, clients)
    return Packager(settings, clients, vcs=vcs), GitHubEvents(settings, clients, vcs, Intake(settings, clients))


def subject_of(key: str) -> str | None:
    """``job:<run id>`` for an accepted job, ``github:<delivery>`` for a queued GitHub event."""
    run_id = layout.parse_job_key(key)
    if run_id:
        return f"job:{run_id}"
    hook = layout.parse_webhook_key(key)
    return f"{hook[0]}:{hook[1]}" if hook else None


def process(event: dict[str, Any], packager: Packager, github: Any = None) -> dict[str, Any]:
    """``github``: the GitHubEvents of a stack with GitHub configured, else None."""
    def work(subject: str) -> str:
        kind, _, ident = subject.partition(":")
        if kind == "job":
            return packager.package(ident)
        if kind == "github" and github is not None:
            return github.handle(ident)
        return "ignored"

    return process_by_subject(event, subject_of, work)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, *_components())
