"""Least-privilege policy statements, one function per runtime component.

Each statement names the runtime call it exists for, and every object-key pattern comes from
``lambda_runtime.schema.layout`` (with ``*`` for the run id and order name), so the policies
cannot drift from where the code reads and writes. Presigned URLs carry the permissions of the
role that signed them: the orchestrator's role therefore also covers what the workers do with
their URLs (bundle and input downloads, log, artifact and result uploads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn

from lambda_runtime.schema import deployment, layout
from lambda_runtime.store.pr_locks import HOLDER_INDEX_PREFIX, LOCK_PREFIX

ANY = "*"  # a run id or an order name inside an object key pattern
# the wake-up signals the watchdog writes (lambda_runtime.watchdog.start; tests/construct/test_construct_iam.py)
WATCHDOG_WAKE_SIGNAL = "wake-*"

# KMS encryption context every sops file is pinned to at dispatch (lambda_runtime.orchestrator.minting)
SOPS_CONTEXT_KEYS = ("order", "run_id")

# Powertools DynamoDBPersistenceLayer: conditional put, get, update and delete of its records
IDEMPOTENCY_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")


def allow(sid: str, actions: Sequence[str], resources: Sequence[str],
          conditions: dict | None = None) -> iam.PolicyStatement:
    return iam.PolicyStatement(sid=sid, actions=list(actions), resources=list(resources), conditions=conditions)


def objects(bucket: s3.IBucket, *keys: str) -> list[str]:
    return [bucket.arn_for_objects(k) for k in keys]


def submission_keys() -> list[str]:
    """What intake accepts and packaging consumes: every prefix ``schema.deployment.NOTIFICATIONS``
    routes to the packaging function (``jobs/<run_id>/job.json``, verified webhook events, ...)."""
    return [layout.job_key(ANY) if prefix == layout.JOBS_PREFIX else prefix + ANY
            for prefix, consumer in deployment.NOTIFICATIONS.items() if consumer == "packaging"]


def sops_context_condition() -> dict:
    """The request's encryption context has exactly our keys (values differ per run and order)."""
    return {
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": list(SOPS_CONTEXT_KEYS)},
        "Null": {"kms:EncryptionContextKeys": "false"},
    }


def callbacks_listing(bucket: s3.IBucket, sid: str) -> iam.PolicyStatement:
    """ListBucket limited to the callbacks prefix: the orchestrator lists ``callbacks/<run>/``, and
    without any ListBucket S3 answers 403 instead of 404 for an absent key."""
    return allow(sid, ["s3:ListBucket"], [bucket.bucket_arn],
                 {"StringLike": {"s3:prefix": [layout.CALLBACKS_PREFIX + "*"]}})


@dataclass(frozen=True)
class Grants:
    """Every credential any environment of the deployment policy grants: what dispatch may read
    and assume (``lambda_runtime.orchestrator.minting``). Exact names, prefixes and globs all
    become ARN patterns."""

    ssm: Sequence[str]
    secrets: Sequence[str]
    roles: Sequence[str]


@dataclass(frozen=True)
class Tables:
    orders: dynamodb.ITable
    events: dynamodb.ITable
    locks: dynamodb.ITable
    idempotency: dynamodb.ITable


def pr_lock_keys_condition() -> dict:
    """Items of the locks table whose key is a project lock or a holder's index
    (``lambda_runtime.store.pr_locks``), never a run's lease (keyed by the bare run id)."""
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [LOCK_PREFIX + ANY, HOLDER_INDEX_PREFIX + ANY]}}


def intake(*, tables: Tables, internal: s3.IBucket, watchdog: sfn.IStateMachine) -> list[iam.PolicyStatement]:
    """``lambda_runtime.intake``: arm the job-timeout watchdog, create the run item, answer status
    (Query) and cancel requests, record idempotency keys, put the accepted job and the cancel signal;
    record reviewers' decisions (a conditional order update with its audit event in one transaction)
    and wake the orchestrator with an approval signal; list and release project locks (conditional
    puts of the lock items, their holders' indexes and audit events in one transaction; a Scan
    to list them); read order logs for the logs page (a GET, so a missing log is a 404 only with
    ListBucket on their prefix); query a run's events to tell an expired run from an unknown one."""
    return [
        allow("RunItems", ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"],
              [tables.orders.table_arn]),
        allow("IdempotencyRecords", IDEMPOTENCY_ACTIONS, [tables.idempotency.table_arn]),
        allow("AuditApprovals", ["dynamodb:PutItem"], [tables.events.table_arn]),
        # a run whose items DynamoDB deleted is told from a run never seen by its events (410, not 404)
        allow("ReadRunEvents", ["dynamodb:Query"], [tables.events.table_arn]),
        allow("PutSubmissionsAndSignals", ["s3:PutObject"],
              objects(internal, *submission_keys(), layout.control_key(ANY, layout.SIGNAL_CANCEL),
                      layout.control_key(ANY, layout.SIGNAL_APPROVAL_PREFIX + ANY))),
        allow("StartJobWatchdog", ["states:StartExecution"], [watchdog.state_machine_arn]),
        allow("ReleasePrLocks", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                                 "dynamodb:ConditionCheckItem"],
              [tables.locks.table_arn], pr_lock_keys_condition()),
        # Scan has no leading key to condition on: it reads the leases' items too (owner, epoch, expiry)
        allow("ListPrLocks", ["dynamodb:Scan"], [tables.locks.table_arn]),
        allow("ReadOrderLogs", ["s3:GetObject"], objects(internal, layout.log_key(ANY, ANY))),
        allow("ListOrderLogs", ["s3:ListBucket"], [internal.bucket_arn],
              {"StringLike": {"s3:prefix": [layout.RUNS_PREFIX + "*"]}}),
    ]


def packaging(
    *,
    tables: Tables,
    internal: s3.IBucket,
    watchdog: sfn.IStateMachine,
    source_buckets: Sequence[s3.IBucket],
    grants: Grants,
    schedule_group: str,
    scheduler_role: iam.IRole,
    event_bus: events.IEventBus,
    stack: Stack,
) -> list[iam.PolicyStatement]:
    """``lambda_runtime.packaging``: run transitions (with their events), order inserts (transactions
    guarded by a ConditionCheck on the run), the job object, bundles, the packaged signal, that
    every referenced secret exists (metadata only) and git tokens; the repositories' schedules
    (``schedules``) and the run state changes it publishes. No KMS, no order role: credentials
    are created at dispatch."""
    statements = [
        allow("RunAndOrderItems",
              ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:PutItem",
               "dynamodb:ConditionCheckItem"],
              [tables.orders.table_arn]),
        allow("AppendEvents", ["dynamodb:PutItem"], [tables.events.table_arn]),
        allow("ReadSubmissions", ["s3:GetObject"], objects(internal, *submission_keys())),
        allow("WriteBundles", ["s3:PutObject", "s3:AbortMultipartUpload"],
              objects(internal, layout.bundle_key(ANY, ANY))),
        allow("PutPackagedSignals", ["s3:PutObject"],
              objects(internal, layout.control_key(ANY, layout.SIGNAL_PACKAGED),
                      layout.control_key(ANY, layout.SIGNAL_APPROVAL_PREFIX + ANY))),
        # pull requests: delivery records, the per-PR run list, acceptance (run item, job object,
        # job-timeout watchdog) and reviewers' decisions from PR comments
        allow("IdempotencyRecords", [*IDEMPOTENCY_ACTIONS, "dynamodb:ConditionCheckItem"],
              [tables.idempotency.table_arn]),
        allow("AcceptPullRequestJobs", ["s3:PutObject"], objects(internal, layout.job_key(ANY))),
        allow("StartJobWatchdog", ["states:StartExecution"], [watchdog.state_machine_arn]),
        # DescribeParameters has no resource-level permissions; it returns metadata, never values
        allow("CheckParametersExist", ["ssm:DescribeParameters"], ["*"]),
        *schedules(stack=stack, group=schedule_group, scheduler_role=scheduler_role),
        publish(event_bus),
    ]
    if grants.secrets:
        statements.append(allow("CheckSecretsExistAndReadGitTokens",
                                ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
                                [secret_arn(stack, p) for p in grants.secrets]))
    if grants.ssm:
        statements.append(allow("ReadGitTokenParameters", ["ssm:GetParameter"],
                                [ssm_parameter_arn(stack, p) for p in grants.ssm]))
    if source_buckets:
        statements.append(allow("ReadZipSources", ["s3:GetObject"], [b.arn_for_objects("*") for b in source_buckets]))
    return statements


def orchestrator(
    *,
    tables: Tables,
    internal: s3.IBucket,
    done: s3.IBucket,
    watchdog: sfn.IStateMachine,
    worker_function: lambda_.IFunction,
    worker_project: codebuild.IProject,
    sops_key: kms.IKey,
    grants: Grants,
    event_bus: events.IEventBus,
    stack: Stack,
) -> list[iam.PolicyStatement]:
    """``lambda_runtime.orchestrator``: consistent Query of a run, fenced transactions (Update on
    orders, Put on events, ConditionCheck on the lease), lease updates, callback listing and
    result reads, engine results, presigned worker URLs, the done object, watchdogs, dispatch,
    each order's credentials, minted at dispatch (read, assume, encrypt, delete when final), and
    the order and run state changes it publishes."""
    statements = [
        # GetItem: the notifier reads a run item whole, once per run, for the names its events carry
        allow("RunAndOrderItems", ["dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:GetItem"],
              [tables.orders.table_arn]),
        allow("AppendEvents", ["dynamodb:PutItem"], [tables.events.table_arn]),
        # GetItem: RunLocks.release/acquire re-read the lease (a wake-up arrived meanwhile, a lost answer)
        allow("Leases", ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"],
              [tables.locks.table_arn]),
        callbacks_listing(internal, "ListCallbacks"),
        allow("ReadResultsAndPresignDownloads", ["s3:GetObject"],
              objects(internal, layout.result_key(ANY, ANY), layout.bundle_key(ANY, ANY),
                      layout.artifacts_key(ANY, ANY))),
        allow("WriteResultsAndPresignUploads", ["s3:PutObject"],
              objects(internal, layout.result_key(ANY, ANY), layout.log_key(ANY, ANY),
                      layout.artifacts_key(ANY, ANY))),
        allow("WriteDone", ["s3:PutObject"], objects(done, layout.done_key(ANY))),
        allow("StartOrderWatchdogs", ["states:StartExecution"], [watchdog.state_machine_arn]),
        allow("DispatchLambdaWorker", ["lambda:InvokeFunction"], [worker_function.function_arn]),
        # BatchGetBuilds: a CodeBuild order's result is checked against its build's own status
        allow("DispatchCodeBuildWorker", ["codebuild:StartBuild", "codebuild:StopBuild", "codebuild:BatchGetBuilds"],
              [worker_project.project_arn]),
        allow("MintedCredentials", ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
              objects(internal, layout.secrets_key(ANY, ANY), layout.mask_key(ANY, ANY),
                      layout.mask_input_key(ANY, ANY))),
        allow("EncryptOrderSecrets", ["kms:Encrypt"], [sops_key.key_arn], sops_context_condition()),
        publish(event_bus),
    ]
    if grants.ssm:
        statements.append(allow("ReadGrantedParameters", ["ssm:GetParameter"],
                                [ssm_parameter_arn(stack, p) for p in grants.ssm]))
    if grants.secrets:
        statements.append(allow("ReadGrantedSecrets", ["secretsmanager:GetSecretValue"],
                                [secret_arn(stack, p) for p in grants.secrets]))
    if grants.roles:
        statements.append(allow("AssumeGrantedRoles", ["sts:AssumeRole"], list(grants.roles)))
    return statements


def schedules(*, stack: Stack, group: str, scheduler_role: iam.IRole) -> list[iam.PolicyStatement]:
    """``pipelines.schedules.Schedules``: reconcile a repository's schedules in the deployment's group
    (list by name prefix, get, create, update, delete), each sending with the scheduler role,
    which Create and Update pass to Scheduler."""
    return [
        allow("ReconcileSchedules", ["scheduler:GetSchedule", "scheduler:CreateSchedule", "scheduler:UpdateSchedule",
                                     "scheduler:DeleteSchedule"],
              [stack.format_arn(service="scheduler", resource="schedule", resource_name=f"{group}/{ANY}",
                                arn_format=ArnFormat.SLASH_RESOURCE_NAME)]),
        # ListSchedules has no resource-level permissions; the runtime filters by group and prefix
        allow("ListSchedules", ["scheduler:ListSchedules"], ["*"]),
        allow("PassSchedulerRole", ["iam:PassRole"], [scheduler_role.role_arn],
              {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}),
    ]


def scheduler(*, queue: sqs.IQueue) -> list[iam.PolicyStatement]:
    """The role every schedule of the group sends with: one message per firing, to the packaging queue."""
    return [allow("SendFirings", ["sqs:SendMessage"], [queue.queue_arn])]


def publish(event_bus: events.IEventBus) -> iam.PolicyStatement:
    """``lambda_runtime.notify``: run and order state changes, put on the deployment's bus."""
    return allow("PublishStateChanges", ["events:PutEvents"], [event_bus.event_bus_arn])


def image_pulls(repository_arns: Sequence[str]) -> list[iam.PolicyStatement]:
    """The CodeBuild role pulls an order's allowed ECR image itself (``SERVICE_ROLE`` credentials):
    the layer and manifest reads on those repositories, and the registry token, which has no
    resource-level permissions. Explicit, not left to the token CDK grants for the runtime image."""
    if not repository_arns:
        return []
    return [
        allow("PullAllowedImages", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                    "ecr:BatchCheckLayerAvailability"], repository_arns),
        allow("AllowedImagesRegistryToken", ["ecr:GetAuthorizationToken"], ["*"]),
    ]


def worker(*, sops_key: kms.IKey) -> list[iam.PolicyStatement]:
    """``lambda_runtime.worker`` (Lambda and CodeBuild): everything else goes through presigned
    URLs, so the only right of its own is decrypting a sops file bound to a run and order."""
    return [allow("DecryptBundleSecrets", ["kms:Decrypt"], [sops_key.key_arn], sops_context_condition())]


def watchdog(*, internal: s3.IBucket) -> list[iam.PolicyStatement]:
    """The watchdog definition: HeadObject (s3:GetObject) of an order's result or the job-timeout
    signal, a conditional PutObject of ``timed_out`` there, the wake-up object it puts when a result
    already exists (``lambda_runtime.watchdog.start``: ``control/wake-<subject>``), and ListBucket
    so an absent key is a 404."""
    guarded = (layout.result_key(ANY, ANY), layout.control_key(ANY, layout.SIGNAL_JOB_TIMEOUT))
    return [
        allow("HeadResults", ["s3:GetObject"], objects(internal, *guarded)),
        allow("WriteTimedOutAndWakeUps", ["s3:PutObject"],
              objects(internal, *guarded, layout.control_key(ANY, WATCHDOG_WAKE_SIGNAL))),
        callbacks_listing(internal, "ListCallbacks"),
    ]


def _pattern(grant: str) -> str:
    """A policy grant as an ARN resource pattern: a prefix (``a/``) or a glob keeps its ``*``; an
    exact name stays exact."""
    return grant + "*" if grant.endswith("/") else grant


def ssm_parameter_arn(stack: Stack, grant: str) -> str:
    """``/iac-ci/`` -> ``arn:...:parameter/iac-ci/*`` (the ARN drops a name's leading slash)."""
    return stack.format_arn(service="ssm", resource="parameter", resource_name=_pattern(grant).lstrip("/"),
                            arn_format=ArnFormat.SLASH_RESOURCE_NAME)


def secret_arn(stack: Stack, grant: str) -> str:
    """``iac-ci/`` -> ``arn:...:secret:iac-ci/*``; an exact name gets ``-??????``, the random suffix
    Secrets Manager appends to every ARN."""
    if grant.startswith("arn:"):
        return grant
    pattern = _pattern(grant)
    if not pattern.endswith("*"):
        pattern += "-??????"
    return stack.format_arn(service="secretsmanager", resource="secret", resource_name=pattern,
                            arn_format=ArnFormat.COLON_RESOURCE_NAME)
