"""The ``Storage`` namespace: the engine's state (tables, buckets, the sops key, the HMAC secrets).

Everything here outlives a run and, with the default ``RemovalPolicy.RETAIN``, the stack (the state
bucket whatever ``removal_policy`` says); its logical ids are those of ``Storage/...`` paths since the
first release, so they are never moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from iac_ci_constructs import defaults
from iac_ci_constructs import iam as policies
from iac_ci_constructs.certificates import Certificates, build_certificates
from iac_ci_constructs.props import IacCiPipelineProps
from lambda_runtime.schema import deployment, layout, retention
from lambda_runtime.schema.tables import IDEMPOTENCY, LOCKS, ORDER_EVENTS, ORDERS, TABLES


@dataclass(frozen=True)
class Storage:
    tables: Mapping[str, dynamodb.Table]  # by TableDef.logical_name
    access_logs_bucket: s3.IBucket
    internal_bucket: s3.Bucket
    done_bucket: s3.Bucket
    state_bucket: s3.Bucket
    kms_key: kms.IKey
    webhook_secret: secretsmanager.ISecret
    log_link_secret: secretsmanager.ISecret
    certificates: Certificates | None = None  # mutual TLS only (``certificates.py``)

    @property
    def table_grants(self) -> policies.Tables:
        """The tables as the policy builders of ``iac_ci_constructs.iam`` take them."""
        return policies.Tables(orders=self.tables[ORDERS.logical_name], events=self.tables[ORDER_EVENTS.logical_name],
                               locks=self.tables[LOCKS.logical_name], idempotency=self.tables[IDEMPOTENCY.logical_name])


def build_storage(scope: Construct, props: IacCiPipelineProps) -> Storage:
    """``scope/Storage``; the existing key, secret and access-log bucket of ``props`` replace the new ones."""
    group = Construct(scope, "Storage")
    removal = props.removal_policy
    tables = {t.logical_name: defaults.table(group, t, removal_policy=removal) for t in TABLES}
    access_logs = props.existing_access_logs_bucket or defaults.access_logs_bucket(
        group, "AccessLogsBucket", removal_policy=removal)
    internal = defaults.bucket(
        group, "InternalBucket", removal_policy=removal, access_logs=access_logs,
        lifecycle_rules=[  # everything the engine writes there: submissions and callbacks, then runs
            *(defaults.expiring(prefix, props.internal_object_retention_days)
              for prefix in dict.fromkeys(deployment.NOTIFICATIONS)),
            # a run needs its own objects until it ends, up to the longest a run lasts after they were written,
            # and its logs and artifacts as long as the run itself is kept
            defaults.expiring(layout.RUNS_PREFIX, retention.run_object_days(
                max(props.internal_object_retention_days, props.run_retention_days), props.max_run_days)),
        ],
    )
    done = defaults.bucket(
        group, "DoneBucket", removal_policy=removal, access_logs=access_logs,
        lifecycle_rules=[defaults.expiring("", props.done_object_retention_days, rule_id="ExpireDone")])
    state = _state_bucket(group, access_logs=access_logs)
    kms_key: kms.IKey = props.existing_kms_key or kms.Key(
        group, "SopsKey", description="iac-ci: sops-encrypted secrets of order bundles",
        enable_key_rotation=True, removal_policy=removal,
    )
    webhook_secret: secretsmanager.ISecret = props.existing_webhook_secret or secretsmanager.Secret(
        group, "WebhookSecret", description="iac-ci: HMAC-SHA256 key signing requests to the API",
        generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
        removal_policy=removal,
    )
    # a key of its own for log links (``lambda_runtime.intake.log_links``): a link reads logs and
    # nothing else, and rotating it cannot break API clients
    log_link_secret = secretsmanager.Secret(
        group, "LogLinkSecret", description="iac-ci: HMAC-SHA256 key signing the log links in pull request comments",
        generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
        removal_policy=removal,
    )
    return Storage(tables=tables, access_logs_bucket=access_logs, internal_bucket=internal, done_bucket=done,
                   state_bucket=state, kms_key=kms_key, webhook_secret=webhook_secret,
                   log_link_secret=log_link_secret,
                   certificates=build_certificates(group, props, access_logs=access_logs))


def _state_bucket(scope: Construct, *, access_logs: s3.IBucket) -> s3.Bucket:
    """The Terraform state of what the orders applied: no expiry (its noncurrent versions, the state's
    history, are kept too) and always ``RemovalPolicy.RETAIN``, whatever ``removal_policy`` says. That
    property is for the engine's own records, which a test stack may drop; the state describes
    infrastructure that outlives the stack, and without it Terraform can neither change nor destroy that
    infrastructure. For the same reason no auto-delete of its objects is ever set up: removing it is a
    deliberate step of the teardown (README, Tearing down)."""
    return defaults.bucket(scope, "StateBucket", removal_policy=RemovalPolicy.RETAIN, access_logs=access_logs)
