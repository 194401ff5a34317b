"""Lambda entrypoint (``init_job``): accepted jobs (S3 ``jobs/`` events via SQS) get packaged, and
queued GitHub events (S3 ``webhooks/github/`` events) become jobs, as do iac-ci's own deliveries
(``webhooks/iac-ci/``: a schedule's firing, a run's end). A schedule's firing arrives on the queue
as EventBridge Scheduler's message; it is written as a delivery first (once per schedule and due
time: a duplicate firing finds the object there), whose S3 event then runs it like any other."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.aws.s3_events import process_by_subject
from lambda_runtime.logs import logger
from lambda_runtime.packaging.logic import Packager
from lambda_runtime.pipelines.schedules import Firing
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings
from lambda_runtime.vcs.base import VcsProvider, provider_for

if TYPE_CHECKING:  # imported by build() only when GitHub is configured: PyGithub adds ~100 ms to a cold start
    from lambda_runtime.github.events import GitHubEvents


class Packaging(NamedTuple):
    """What ``process`` needs: the packager, and the GitHub events handler when GitHub is configured."""

    packager: Packager
    github: GitHubEvents | None = None


def build(
    settings: Settings,
    clients: AwsClients,
    *,
    vcs: VcsProvider | None = None,
    clock: Callable[[], float] = time.time,
) -> Packaging:
    """Packaging as the Lambda function and the embedded stack both run it. ``vcs`` reports the
    runs (default: the configured provider); the GitHub events handler reads ``.iac-ci.yml`` and
    comments through ``vcs`` when that is the GitHub provider, else through its own."""
    vcs = vcs or provider_for(settings, clients)
    packager = Packager(settings, clients, vcs=vcs, clock=clock)
    if not settings.github_enabled:
        return Packaging(packager)
    from lambda_runtime.github.events import GitHubEvents
    from lambda_runtime.github.provider import GitHubVcs
    from lambda_runtime.store.acceptance import Acceptance

    github = vcs if isinstance(vcs, GitHubVcs) else GitHubVcs(settings, clients)
    acceptance = Acceptance(settings, clients, store=packager.store, clock=clock, legs=packager.legs)
    return Packaging(packager, GitHubEvents(settings, clients, github, acceptance))


def subject_of(key: str) -> str | None:
    """``job:<run id>`` for an accepted job, ``github:<delivery>`` for a queued GitHub event,
    ``iac-ci:<delivery>`` for one of iac-ci's own."""
    run_id = layout.parse_job_key(key)
    if run_id:
        return f"job:{run_id}"
    hook = layout.parse_webhook_key(key)
    return f"{hook[0]}:{hook[1]}" if hook else None


def process(event: dict[str, Any], packager: Packager, github: GitHubEvents | None = None) -> dict[str, Any]:
    """``github``: the GitHubEvents of a stack with GitHub configured, else None."""
    def work(subject: str) -> str:
        kind, _, ident = subject.partition(":")
        if kind == "job":
            return packager.package(ident)
        if kind == "github" and github is not None:
            return github.handle(ident)
        if kind == layout.INTERNAL_PROVIDER and github is not None:
            return github.handle(ident, internal=True)
        return "ignored"

    failed = _schedule_firings(event, packager)
    answer = process_by_subject(event, subject_of, work)
    answer["batchItemFailures"] += [{"itemIdentifier": i} for i in failed]
    return answer


def _schedule_firings(event: dict[str, Any], packager: Packager) -> list[str]:
    """Write each schedule firing in the batch as a delivery; the ids of the messages that failed."""
    failed = []
    for record in event.get("Records", []):
        firing = Firing.parse(record.get("body") or "")
        if firing is None:
            continue
        try:
            packager.clients.s3.put_object(
                Bucket=packager.settings.internal_bucket, IfNoneMatch="*", ContentType="application/json",
                Key=layout.webhook_key(layout.INTERNAL_PROVIDER, firing.delivery),
                Body=json.dumps(firing.event()).encode())
            logger.info("schedule fired", extra={"repo": firing.repo, "job": firing.job, "at": firing.scheduled_time})
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                continue  # fired already: one run per schedule and due time
            logger.exception("could not record a schedule's firing", extra={"repo": firing.repo, "job": firing.job})
            failed.append(str(record.get("messageId")))
    return failed


@cache
def _components() -> Packaging:
    settings = Settings.from_env()
    return build(settings, AwsClients(region=settings.region))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, *_components())
