"""boto3 clients behind one injectable object.

Components take an ``AwsClients`` instead of calling ``boto3.client`` themselves, so tests
point them at moto (or inject faults) without patching. ``AWS_ENDPOINT_URL`` is honoured by
botocore itself, which is how the embedded runner redirects everything to loopback.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:  # the stubs are a development dependency; at run time these are plain boto3 clients
    from mypy_boto3_codebuild.client import CodeBuildClient
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_kms.client import KMSClient
    from mypy_boto3_lambda.client import LambdaClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_scheduler.client import EventBridgeSchedulerClient
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_ssm.client import SSMClient
    from mypy_boto3_stepfunctions.client import SFNClient
    from mypy_boto3_sts.client import STSClient

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=5, read_timeout=60)
# SigV4 for presigned URLs everywhere (SigV2 is deprecated and not accepted in newer regions)
_S3 = Config(signature_version="s3v4", s3={"addressing_style": "path"})
# Invoke has no idempotency key: a retry after a lost response would start the worker twice
_NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})
_SERVICE_CONFIG = {"s3": _S3, "lambda": _NO_RETRY}


class AwsClients:
    def __init__(
        self,
        session: boto3.Session | None = None,
        *,
        region: str | None = None,
        config: Config | None = None,
        **overrides: Any,
    ):
        self._session = session or boto3.Session(region_name=region)
        self._config = _RETRIES.merge(config) if config else _RETRIES
        self._clients: dict[str, Any] = dict(overrides)
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        c = self._clients.get(service)
        if c is None:
            with self._lock:  # boto3 sessions are not thread-safe; clients are
                c = self._clients.get(service)
                if c is None:
                    extra = _SERVICE_CONFIG.get(service)
                    config = self._config.merge(extra) if extra else self._config
                    c = self._session.client(service, config=config)  # type: ignore[call-overload]
                    self._clients[service] = c
        return c

    @property
    def s3(self) -> S3Client:
        return self.client("s3")

    @property
    def dynamodb(self) -> DynamoDBClient:
        return self.client("dynamodb")

    @property
    def sqs(self) -> SQSClient:
        return self.client("sqs")

    @property
    def sfn(self) -> SFNClient:
        return self.client("stepfunctions")

    @property
    def kms(self) -> KMSClient:
        return self.client("kms")

    @property
    def ssm(self) -> SSMClient:
        return self.client("ssm")

    @property
    def secrets(self) -> SecretsManagerClient:
        return self.client("secretsmanager")

    @property
    def sts(self) -> STSClient:
        return self.client("sts")

    @property
    def lambda_(self) -> LambdaClient:
        return self.client("lambda")

    @property
    def codebuild(self) -> CodeBuildClient:
        return self.client("codebuild")

    @property
    def scheduler(self) -> EventBridgeSchedulerClient:
        return self.client("scheduler")

    @property
    def events(self) -> EventBridgeClient:
        return self.client("events")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", ""))
    return ""


def is_client_error(exc: BaseException) -> bool:
    """A definite refusal (HTTP 4xx): the request was not acted on. Timeouts and 5xx are unknown."""
    resp = getattr(exc, "response", None)
    status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(resp, dict) else None
    return isinstance(status, int) and 400 <= status < 500


def is_conditional_failure(exc: BaseException) -> bool:
    return error_code(exc) in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
        "PreconditionFailed",
        "412",
    )
