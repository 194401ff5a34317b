"""Secure defaults, one function per service, so every resource of a kind is built the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambda_runtime.schema import retention
from lambda_runtime.schema.tables import TableDef

ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
DEAD_LETTER_RETENTION = Duration.days(14)
MAX_RECEIVE_COUNT = 5
ABORT_MULTIPART_DAYS = 1
ACCESS_LOG_DAYS = 365


def construct_id(logical_name: str) -> str:
    """PascalCase construct id of a table (``order_events`` -> ``OrderEvents``): stable, as it is API."""
    return "".join(part.capitalize() for part in logical_name.split("_"))


def _attribute(key: tuple[str, str]) -> dynamodb.Attribute:
    name, typ = key
    return dynamodb.Attribute(name=name, type=ATTRIBUTE_TYPES[typ])


def table(scope: Construct, definition: TableDef, *, removal_policy: RemovalPolicy) -> dynamodb.Table:
    """A table exactly as ``TableDef`` describes it: on-demand, PITR, encrypted with the AWS managed
    key, TTL on the definition's attribute, every GSI projecting ALL (as ``create_table_kwargs``)."""
    table = dynamodb.Table(
        scope,
        construct_id(definition.logical_name),
        partition_key=_attribute(definition.partition_key),
        sort_key=_attribute(definition.sort_key) if definition.sort_key else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        time_to_live_attribute=definition.ttl_attribute,
        removal_policy=removal_policy,
    )
    for gsi in definition.gsis:
        table.add_global_secondary_index(
            index_name=gsi.name,
            partition_key=_attribute(gsi.partition_key),
            sort_key=_attribute(gsi.sort_key) if gsi.sort_key else None,
            projection_type=dynamodb.ProjectionType.ALL,
        )
    return table


# what every bucket of the stack has, whatever it holds
_BUCKET_BASELINE: dict[str, Any] = {
    "encryption": s3.BucketEncryption.S3_MANAGED,
    "versioned": True,
    "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
    "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    "enforce_ssl": True,
    "minimum_tls_version": 1.2,
}


def bucket(
    scope: Construct,
    id: str,
    *,
    removal_policy: RemovalPolicy,
    access_logs: s3.IBucket | None,
    lifecycle_rules: Sequence[s3.LifecycleRule] = (),
) -> s3.Bucket:
    """SSE-S3, versioned, all public access blocked, TLS 1.2+ only, ACLs disabled, access logged.

    SSE-S3 rather than SSE-KMS: workers and the watchdog reach the internal bucket through
    presigned URLs and Step Functions, which would otherwise need KMS rights of their own."""
    return _policy_kept_with(s3.Bucket(
        scope,
        id,
        **_BUCKET_BASELINE,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=f"{id}/" if access_logs is not None else None,
        lifecycle_rules=_lifecycle_rules(lifecycle_rules),
        removal_policy=removal_policy,
    ), removal_policy)


def access_logs_bucket(scope: Construct, id: str, *, removal_policy: RemovalPolicy) -> s3.Bucket:
    """The destination of server access logs: SSE-S3 (the only encryption log delivery supports),
    written through a bucket policy (ACLs disabled), logs kept for a year."""
    return _policy_kept_with(s3.Bucket(
        scope,
        id,
        **_BUCKET_BASELINE,
        lifecycle_rules=_lifecycle_rules([expiring("", ACCESS_LOG_DAYS, rule_id="ExpireAccessLogs")]),
        removal_policy=removal_policy,
    ), removal_policy)


def _policy_kept_with(bucket: s3.Bucket, removal_policy: RemovalPolicy) -> s3.Bucket:
    """A bucket's policy follows the bucket's removal policy. CDK deletes the policy of a retained bucket
    with the stack, so what ``cdk destroy`` leaves (the Terraform state, for good) would then answer plain
    HTTP, and the access-log bucket would refuse the deliveries S3 still sends it."""
    if bucket.policy is not None:
        bucket.policy.apply_removal_policy(removal_policy)
    return bucket


def expiring(prefix: str, days: int, *, rule_id: str | None = None) -> s3.LifecycleRule:
    """Objects under ``prefix`` (every object: "") expire after ``days``; the versions that are no longer
    current a day after they became so (``retention.NONCURRENT_VERSION_DAYS``): the buckets are versioned,
    and without it an expired object would stay as long again as a noncurrent version."""
    return s3.LifecycleRule(
        id=rule_id or "Expire" + construct_id(prefix.strip("/")),
        prefix=prefix or None,
        expiration=Duration.days(days),
        noncurrent_version_expiration=Duration.days(retention.NONCURRENT_VERSION_DAYS),
    )


def _lifecycle_rules(rules: Sequence[s3.LifecycleRule]) -> list[s3.LifecycleRule]:
    """``rules`` with what every bucket gets: incomplete multipart uploads aborted after a day and, once
    anything in the bucket expires, the delete markers left with no version behind them removed. S3
    removes those by itself only once they are as old as a rule's ``Days`` (8 for ``runs/``), and refuses
    ``ExpiredObjectDeleteMarker`` in a rule that has ``Days``: hence a rule of its own."""
    abort = s3.LifecycleRule(id="AbortIncompleteUploads",
                             abort_incomplete_multipart_upload_after=Duration.days(ABORT_MULTIPART_DAYS))
    out = [abort, *rules]
    if any(r.expiration is not None for r in rules):
        out.append(s3.LifecycleRule(id="RemoveExpiredDeleteMarkers", expired_object_delete_marker=True))
    return out


def queue(scope: Construct, id: str, *, visibility_timeout: Duration | None = None,
          dead_letter_queue: sqs.IQueue | None = None) -> sqs.Queue:
    """SSE-SQS (S3 event notifications cannot use the AWS managed KMS key), TLS only; a redrive
    to ``dead_letter_queue`` after five receives when one is given."""
    return sqs.Queue(
        scope,
        id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        visibility_timeout=visibility_timeout,
        retention_period=DEAD_LETTER_RETENTION if dead_letter_queue is None else Duration.days(4),
        dead_letter_queue=(
            sqs.DeadLetterQueue(max_receive_count=MAX_RECEIVE_COUNT, queue=dead_letter_queue)
            if dead_letter_queue is not None
            else None
        ),
    )


def log_group(scope: Construct, id: str, *, retention: logs.RetentionDays,
              removal_policy: RemovalPolicy) -> logs.LogGroup:
    return logs.LogGroup(scope, id, retention=retention, removal_policy=removal_policy)


def service_role(scope: Construct, id: str, service: str, description: str) -> iam.Role:
    """A role with no managed policies: every permission is an explicit statement added later."""
    return iam.Role(scope, id, assumed_by=iam.ServicePrincipal(service), description=description)
