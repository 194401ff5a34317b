"""The engine: the watchdog state machine and the intake, packaging and orchestrator functions.

Every engine function gets the same environment (``lambda_runtime.settings.Settings``, naming
every table, bucket, key, secret, queue consumer and worker), and its own role from
``iac_ci_constructs.iam``. The functions are direct children of the pipeline (``Intake``,
``Packaging``, ``Orchestrator``), not a namespace: their construct paths are what cdk-nag
reports findings under (and what consumers' path-based suppressions name), so they stay put.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from cdk_nag import NagSuppressions
from constructs import Construct

from iac_ci_constructs import defaults, nag
from iac_ci_constructs import iam as policies
from iac_ci_constructs.functions import image_function
from iac_ci_constructs.monitoring import metrics_namespace
from iac_ci_constructs.notifications import Notifications
from iac_ci_constructs.props import PACKAGING_EPHEMERAL_STORAGE_MIB, SQS_MAX_CONCURRENCY, IacCiPipelineProps
from iac_ci_constructs.queues import Queues
from iac_ci_constructs.schedules import Schedules
from iac_ci_constructs.storage import Storage
from iac_ci_constructs.worker_images import allow_list
from iac_ci_constructs.workers import Workers
from lambda_runtime import watchdog as watchdog_definition
from lambda_runtime.observability.metrics import NAMESPACE_ENV
from lambda_runtime.schema.tables import IDEMPOTENCY, LOCKS, ORDER_EVENTS, ORDERS
from lambda_runtime.settings import Settings

EVENT_SOURCE_BATCH_SIZE = {
    "packaging": 1,  # one job may take the function's whole timeout: never queue others behind it
    "orchestrator": 10,
}
INTAKE_MEMORY_MIB = 512
ORCHESTRATOR_MEMORY_MIB = 512


@dataclass(frozen=True)
class Watchdog:
    state_machine: sfn.StateMachine
    log_group: logs.LogGroup


@dataclass(frozen=True)
class Engine:
    settings: Settings
    intake: lambda_.DockerImageFunction
    packaging: lambda_.DockerImageFunction
    orchestrator: lambda_.DockerImageFunction


def build_watchdog(scope: Construct, props: IacCiPipelineProps, *, internal_bucket: s3.IBucket) -> Watchdog:
    """``scope/Watchdog``: the runtime's definition (``lambda_runtime.watchdog``), as it is."""
    group = Construct(scope, "Watchdog")
    log_group = defaults.log_group(group, "LogGroup", retention=props.log_retention,
                                   removal_policy=props.removal_policy)
    role = defaults.service_role(group, "Role", "states.amazonaws.com", "iac-ci watchdog")
    for statement in policies.watchdog(internal=internal_bucket):
        role.add_to_principal_policy(statement)
    state_machine = sfn.StateMachine(
        group, "StateMachine",
        definition_body=sfn.DefinitionBody.from_string(watchdog_definition.definition_text()),
        state_machine_type=sfn.StateMachineType.STANDARD, role=role, tracing_enabled=props.tracing,
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        comment="iac-ci watchdog: writes timed_out for an order (or the job) that did not report in time",
    )
    if not props.tracing:
        NagSuppressions.add_resource_suppressions(state_machine, [nag.suppression(
            "SF2", "X-Ray tracing is turned off by the deployment's owner (IacCiPipeline tracing=False)")])
    return Watchdog(state_machine=state_machine, log_group=log_group)


def settings(props: IacCiPipelineProps, *, stack: Stack, storage: Storage, workers: Workers,
             watchdog: Watchdog, schedules: Schedules, notifications: Notifications, api_url: str) -> Settings:
    """What every engine function reads from its environment (``Settings.to_env``); ``api_url`` is
    the API's public base URL, for the log links of PR comments (``Api.public_url``). One
    environment for all three, the schedule, notification and image settings included, so no
    function can start with a view of the deployment the others do not share."""
    tables = storage.tables
    return Settings(
        orders_table=tables[ORDERS.logical_name].table_name,
        events_table=tables[ORDER_EVENTS.logical_name].table_name,
        locks_table=tables[LOCKS.logical_name].table_name,
        idempotency_table=tables[IDEMPOTENCY.logical_name].table_name,
        internal_bucket=storage.internal_bucket.bucket_name,
        done_bucket=storage.done_bucket.bucket_name,
        state_bucket=storage.state_bucket.bucket_name,
        kms_key_arn=storage.kms_key.key_arn,
        watchdog_arn=watchdog.state_machine.state_machine_arn,
        webhook_secret_id=storage.webhook_secret.secret_arn,
        log_link_secret_id=storage.log_link_secret.secret_arn,
        api_url=api_url,
        worker_function=workers.function.function_name,
        codebuild_project=workers.project.project_name,
        region=stack.region,
        allowed_ssm_prefixes=tuple(props.allowed_ssm_prefixes),
        allowed_secret_prefixes=tuple(props.allowed_secret_prefixes),
        allowed_role_arns=tuple(props.allowed_role_arns),
        allowed_source_buckets=tuple(b.bucket_name for b in props.allowed_source_buckets),
        watchdog_grace_seconds=props.watchdog_grace_seconds,
        run_retention_days=props.run_retention_days,
        max_run_days=props.max_run_days,
        event_ttl_days=props.event_retention_days,
        github_webhook_secret_id=props.github_webhook_secret.secret_arn if props.github_webhook_secret else "",
        github_token_secret_id=props.github_token_secret.secret_arn if props.github_token_secret else "",
        github_app_secret_id=props.github_app_secret.secret_arn if props.github_app_secret else "",
        github_api_url=props.github_api_url,
        max_source_bytes=props.max_source_bytes,
        max_source_files=props.max_source_files,
        max_running_per_run=props.max_running_per_run or 0,
        max_running_per_deployment=props.max_running_per_deployment or 0,
        policy=props.deployment_policy().to_json() if props.policy is not None else "",
        schedule_group=schedules.group_name,
        scheduler_role_arn=schedules.role.role_arn,
        schedule_queue_arn=schedules.queue.queue_arn,
        event_bus=notifications.event_bus.event_bus_name,
        deployment_name=notifications.deployment_name,
        images=allow_list(props.images).to_json() if props.images is not None else "",
    )


def grants(props: IacCiPipelineProps) -> policies.Grants:
    """Everything any environment of the policy grants: what dispatch may read and assume."""
    envs = props.deployment_policy().environments.values()
    return policies.Grants(ssm=sorted({g for e in envs for g in e.ssm}),
                           secrets=sorted({g for e in envs for g in e.secrets}),
                           roles=sorted({g for e in envs for g in e.roles}))


def build_engine(
    scope: Construct,
    props: IacCiPipelineProps,
    *,
    image: ecr_assets.DockerImageAsset,
    storage: Storage,
    queues: Queues,
    workers: Workers,
    watchdog: Watchdog,
    schedules: Schedules,
    notifications: Notifications,
    api_url: str,
) -> Engine:
    """The three engine functions as direct children of ``scope``, each consuming its queue."""
    stack = Stack.of(scope)
    engine_settings = settings(props, stack=stack, storage=storage, workers=workers, watchdog=watchdog,
                               schedules=schedules, notifications=notifications, api_url=api_url)
    # the orchestrator's EMF metrics land in the deployment's namespace (the dashboard's)
    env = {**engine_settings.to_env(), NAMESPACE_ENV: metrics_namespace(scope)}
    tables, internal = storage.table_grants, storage.internal_bucket
    granted = grants(props)
    packaging = image_function(
        scope, "Packaging", "packaging",
        policies.packaging(
            tables=tables, internal=internal, watchdog=watchdog.state_machine,
            source_buckets=props.allowed_source_buckets, grants=granted, schedule_group=schedules.group_name,
            scheduler_role=schedules.role, event_bus=notifications.event_bus, stack=stack),
        props=props, image=image, environment=env, memory_mib=props.packaging_memory_mib,
        ephemeral_storage_mib=PACKAGING_EPHEMERAL_STORAGE_MIB,
    )
    orchestrator = image_function(
        scope, "Orchestrator", "orchestrator",
        policies.orchestrator(
            tables=tables, internal=internal, done=storage.done_bucket, watchdog=watchdog.state_machine,
            worker_function=workers.function, worker_project=workers.project, sops_key=storage.kms_key,
            grants=granted, event_bus=notifications.event_bus, stack=stack),
        props=props, image=image, environment=env, memory_mib=ORCHESTRATOR_MEMORY_MIB,
        reserved_concurrency=props.orchestrator_reserved_concurrency,
    )
    intake = image_function(
        scope, "Intake", "intake",
        policies.intake(tables=tables, internal=internal, watchdog=watchdog.state_machine),
        props=props, image=image, environment=env, memory_mib=INTAKE_MEMORY_MIB,
        reserved_concurrency=props.intake_reserved_concurrency,
    )
    storage.webhook_secret.grant_read(intake)
    # log links: intake verifies them; packaging and the orchestrator sign them, as both render the
    # run's PR comment through the one VCS provider (run started; progress and the end)
    for function in (intake, packaging, orchestrator):
        storage.log_link_secret.grant_read(function)
    if props.github_webhook_secret is not None:
        props.github_webhook_secret.grant_read(intake)
    for github_credentials in (props.github_token_secret, props.github_app_secret):
        if github_credentials is not None:  # API calls from packaging (events) and orchestrator (comments)
            github_credentials.grant_read(packaging)
            github_credentials.grant_read(orchestrator)
    consumers = {"packaging": packaging, "orchestrator": orchestrator}
    # an event source invoking past its function's reserved concurrency is throttled, and the throttled
    # messages come back after the visibility timeout (then go to the dead-letter queue): bound it
    max_concurrency = {"orchestrator": _event_source_concurrency(props.orchestrator_reserved_concurrency)}
    for consumer, queue in queues.queues.items():
        consumers[consumer].add_event_source(event_sources.SqsEventSource(
            queue, batch_size=EVENT_SOURCE_BATCH_SIZE[consumer], report_batch_item_failures=True,
            max_concurrency=max_concurrency.get(consumer)))
    return Engine(settings=engine_settings, intake=intake, packaging=packaging, orchestrator=orchestrator)


def _event_source_concurrency(reserved: int | None) -> int | None:
    """The SQS event source's MaximumConcurrency for a function with ``reserved`` concurrency."""
    if reserved is None:
        return None
    low, high = SQS_MAX_CONCURRENCY
    return max(low, min(high, reserved))
