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


@cache
def _packager() -> Packager:
    settings = Settings.from_env()
    return Packager(settings, AwsClients(region=settings.region))


def process(event: dict[str, Any], packager: Packager) -> dict[str, Any]:
    return process_by_subject(event, layout.parse_job_key, packager.package)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, _packager())
