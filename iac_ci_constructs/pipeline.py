"""``IacCiPipeline``: the whole iac-ci engine in one construct.

The smallest deployment is ``IacCiPipeline(stack, "IacCi")``. Everything the runtime needs to
agree on comes from ``lambda_runtime.schema`` (tables, S3 layout, handlers, notifications, routes,
outputs, timeouts) and ``lambda_runtime.settings`` (each function's environment), so the
deployed stack and the embedded runner cannot drift apart.

The children are built by one module each and grouped in plain ``Construct`` namespaces:
``Storage`` (``storage.py``), ``Queues`` (``queues.py``), ``Workers`` (``workers.py``, ids kept
from before the namespace, see ``logical_ids.py``), ``Watchdog`` and the engine functions
(``engine.py``), ``Schedules`` (``schedules.py``), ``Notifications`` (``notifications.py``), ``Api``
(``api.py``), then ``Monitoring`` and ``Outputs``. This module wires them and is the construct's
public face: its properties, ``add_route``, ``grant_*``, ``on_*`` and ``metric_*``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Never

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from iac_ci_constructs import image, nag
from iac_ci_constructs.api import API_STAGE, build_api
from iac_ci_constructs.engine import build_engine, build_watchdog
from iac_ci_constructs.monitoring import Monitoring
from iac_ci_constructs.notifications import Notifications
from iac_ci_constructs.props import IacCiPipelineProps, IacCiPipelinePropsError
from iac_ci_constructs.queues import build_queues
from iac_ci_constructs.schedules import build_schedules
from iac_ci_constructs.storage import build_storage
from iac_ci_constructs.workers import build_workers
from lambda_runtime.pipelines.schedules import ScheduledJob
from lambda_runtime.policy.model import Policy
from lambda_runtime.schema import deployment, layout
from lambda_runtime.schema.images import WorkerImage
from lambda_runtime.schema.tables import IDEMPOTENCY, LOCKS, ORDER_EVENTS, ORDERS

SERVER_ACCESS_LOGS_FLAG = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"


class IacCiPipeline(Construct):
    """Serverless CD for infrastructure as code: API intake, packaging, orchestration, Lambda and
    CodeBuild workers and a Step Functions watchdog, with tables, buckets, queues, alarms and outputs.

    The keyword arguments are the fields of ``IacCiPipelineProps`` (all optional; each documented
    there with the behaviour of its default); invalid values raise ``IacCiPipelinePropsError``
    listing every problem at once. One pipeline per stack: the stack outputs
    (``schema.deployment.OUTPUT_*``) have fixed names the ``iac-ci`` CLI looks up.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        allowed_ssm_prefixes: Sequence[str] = ("/iac-ci/",),
        allowed_secret_prefixes: Sequence[str] = ("iac-ci/",),
        allowed_role_arns: Sequence[str] = (),
        allowed_source_buckets: Sequence[s3.IBucket] = (),
        architecture: lambda_.Architecture = lambda_.Architecture.ARM_64,
        packaging_memory_mib: int = 1024,
        worker_memory_mib: int = 2048,
        worker_ephemeral_storage_mib: int = 4096,
        max_source_bytes: int = 512 * 1024 * 1024,
        max_source_files: int = 100_000,
        codebuild_compute_type: codebuild.ComputeType = codebuild.ComputeType.SMALL,
        intake_reserved_concurrency: int | None = 20,
        orchestrator_reserved_concurrency: int | None = 10,
        worker_reserved_concurrency: int | None = None,
        max_running_per_run: int | None = None,
        max_running_per_deployment: int | None = None,
        policy: Policy | str | Path | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
        run_retention_days: int = 1,
        internal_object_retention_days: int = 1,
        done_object_retention_days: int = 1,
        event_retention_days: int = 90,
        max_run_days: int = 7,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        existing_kms_key: kms.IKey | None = None,
        existing_webhook_secret: secretsmanager.ISecret | None = None,
        github_webhook_secret: secretsmanager.ISecret | None = None,
        github_token_secret: secretsmanager.ISecret | None = None,
        github_app_secret: secretsmanager.ISecret | None = None,
        github_api_url: str = "https://api.github.com",
        existing_access_logs_bucket: s3.IBucket | None = None,
        alarm_topic: sns.ITopic | None = None,
        watchdog_grace_seconds: int = 300,
        api_throttling_rate_limit_per_second: int = 10,
        api_throttling_burst_limit: int = 20,
        api_cloud_watch_role: bool = True,
        image_directory: str | None = None,
        schedules: Sequence[ScheduledJob] = (),
        event_bus: events.IEventBus | None = None,
        images: Mapping[str, WorkerImage] | None = None,
        dashboard: bool = True,
        tracing: bool = True,
        api_domain_name: str | None = None,
        api_domain_certificate: acm.ICertificate | None = None,
        api_mtls_truststore_bucket: s3.IBucket | None = None,
        api_mtls_truststore_key: str = "truststore.pem",
        api_mtls_certificates: bool = False,
        **unknown: Never,
    ) -> None:
        # ``unknown`` turns a misspelt property into one more problem of the IacCiPipelinePropsError
        # (with the closest name) instead of a TypeError that hides the other problems; typed Never,
        # type checkers still reject it. tests/unit/test_construct_props.py keeps these parameters equal
        # to the fields of IacCiPipelineProps (names, order, types, defaults).
        super().__init__(scope, id)
        self.props = IacCiPipelineProps(
            allowed_ssm_prefixes=allowed_ssm_prefixes, allowed_secret_prefixes=allowed_secret_prefixes,
            allowed_role_arns=allowed_role_arns, allowed_source_buckets=allowed_source_buckets,
            architecture=architecture, packaging_memory_mib=packaging_memory_mib,
            worker_memory_mib=worker_memory_mib, worker_ephemeral_storage_mib=worker_ephemeral_storage_mib,
            max_source_bytes=max_source_bytes, max_source_files=max_source_files,
            codebuild_compute_type=codebuild_compute_type,
            intake_reserved_concurrency=intake_reserved_concurrency,
            orchestrator_reserved_concurrency=orchestrator_reserved_concurrency,
            worker_reserved_concurrency=worker_reserved_concurrency,
            max_running_per_run=max_running_per_run, max_running_per_deployment=max_running_per_deployment,
            policy=policy, removal_policy=removal_policy,
            log_retention=log_retention, run_retention_days=run_retention_days,
            internal_object_retention_days=internal_object_retention_days,
            done_object_retention_days=done_object_retention_days, event_retention_days=event_retention_days,
            max_run_days=max_run_days,
            vpc=vpc, vpc_subnets=vpc_subnets, existing_kms_key=existing_kms_key,
            existing_webhook_secret=existing_webhook_secret, github_webhook_secret=github_webhook_secret,
            github_token_secret=github_token_secret, github_app_secret=github_app_secret,
            github_api_url=github_api_url, existing_access_logs_bucket=existing_access_logs_bucket,
            alarm_topic=alarm_topic, watchdog_grace_seconds=watchdog_grace_seconds,
            api_throttling_rate_limit_per_second=api_throttling_rate_limit_per_second,
            api_throttling_burst_limit=api_throttling_burst_limit, api_cloud_watch_role=api_cloud_watch_role,
            image_directory=image_directory, schedules=schedules, event_bus=event_bus, images=images,
            dashboard=dashboard, tracing=tracing,
            api_domain_name=api_domain_name, api_domain_certificate=api_domain_certificate,
            api_mtls_truststore_bucket=api_mtls_truststore_bucket, api_mtls_truststore_key=api_mtls_truststore_key,
            api_mtls_certificates=api_mtls_certificates,
        ).validated(unknown=unknown)
        p = self.props
        self._check_one_per_stack()
        # bucket policies, not ACLs, for server access log delivery (ACLs are disabled on our buckets)
        self.node.set_context(SERVER_ACCESS_LOGS_FLAG, True)

        self._storage = build_storage(self, p)
        self._queues = build_queues(self, self._storage.internal_bucket)
        # one image for every function and the CodeBuild project
        platform = "linux/arm64" if p.is_arm64 else "linux/amd64"
        self._image = ecr_assets.DockerImageAsset(
            self, "Image", directory=str(image.image_directory(p.image_directory)),
            file=image.dockerfile(p.image_directory),
            platform=ecr_assets.Platform.custom(platform), build_args={"IMAGE_PLATFORM": platform},
            display_name="iac-ci runtime",
        )
        self._workers = build_workers(self, p, image=self._image, sops_key=self._storage.kms_key,
                                      failure_queue=self._queues.worker_failure_queue)
        self._watchdog = build_watchdog(self, p, internal_bucket=self._storage.internal_bucket)
        self._schedules = build_schedules(self, p, queue=self._queues.queues["packaging"])
        self._notifications = Notifications(self, "Notifications", event_bus=p.event_bus)
        # before the functions: their environment names its URL
        self._api = build_api(self, p, certificates=self._storage.certificates)
        self._engine = build_engine(self, p, image=self._image, storage=self._storage, queues=self._queues,
                                    workers=self._workers, watchdog=self._watchdog, schedules=self._schedules,
                                    notifications=self._notifications, api_url=self._api.public_url())
        self.settings = self._engine.settings
        self._api.serve(self._engine.intake)
        self._check_client_certificates()
        self._monitoring = Monitoring(
            self, "Monitoring",
            dead_letter_queues=self._queues.dead_letters_by_name,
            functions={"Intake": self._engine.intake, "Packaging": self._engine.packaging,
                       "Orchestrator": self._engine.orchestrator, "Worker": self._workers.function},
            watchdog=self._watchdog.state_machine, watchdog_log_group=self._watchdog.log_group,
            api=self._api.rest_api, alarm_topic=p.alarm_topic, dashboard=p.dashboard,
        )
        self._outputs()
        nag.suppress(self)

    # ---- public API ------------------------------------------------------------------------------
    def add_route(self, method: str, path: str, integration: apigw.Integration | None = None) -> apigw.Method:
        """Serve ``method path`` (e.g. ``POST /webhooks/github``); default: proxied to the intake function.

        Requests are authenticated by the function (HMAC signature), not by API Gateway."""
        return self._api.add_route(method, path, integration)

    def grant_submit(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` submit, follow and cancel runs (``iac-ci submit/status/cancel``) and list and
        release project locks (``iac-ci locks/unlock``): read this stack's outputs (how the CLI finds
        the API), read the webhook secret (the HMAC key) and invoke the API's routes."""
        stack = Stack.of(self)
        describe = iam.Grant.add_to_principal(
            grantee=grantee, actions=["cloudformation:DescribeStacks"], resource_arns=[stack.stack_id])
        invoke = iam.Grant.add_to_principal(
            grantee=grantee, actions=["execute-api:Invoke"],
            resource_arns=[self.api.arn_for_execute_api(stage=API_STAGE)],
        )
        return self.webhook_secret.grant_read(grantee).combine(describe).combine(invoke)

    def grant_approve(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` call the approve and reject routes (``iac-ci approve/reject --stack``) and
        find the API. What it may approve is the policy's business: the caller's principal counts only
        where an environment lists it among its ``reviewers``. No signing secret is given."""
        stack = Stack.of(self)
        describe = iam.Grant.add_to_principal(
            grantee=grantee, actions=["cloudformation:DescribeStacks"], resource_arns=[stack.stack_id])
        invoke = iam.Grant.add_to_principal(
            grantee=grantee, actions=["execute-api:Invoke"], resource_arns=[self._api.decision_routes_arn()])
        return describe.combine(invoke)

    def grant_manage_certificates(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` run ``iac-ci certs --stack`` (init, issue, rotate-intermediate, revoke): the
        certificates table's items, the CA keys (SSM SecureString under ``ca_parameter_prefix`` and
        their KMS key), the truststore object, this stack's outputs and, with ``api_domain_name``,
        telling API Gateway the truststore's new version. Needs mutual TLS (``api_domain_name`` or
        ``api_mtls_certificates``)."""
        certificates = self._storage.certificates
        if certificates is None:
            raise IacCiPipelinePropsError(["grant_manage_certificates needs mutual TLS: give api_domain_name "
                                           "(or api_mtls_certificates=True)"])
        return certificates.grant_manage(grantee, domain_name=self.props.api_domain_name)

    def grant_read_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read the final run summaries (``s3://<done bucket>/<run_id>/done``)."""
        return self._storage.done_bucket.grant_read(grantee, layout.done_key("*"))

    def grant_state_read_write(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` (typically a role orders assume, for Terraform's S3 backend) use the state bucket."""
        return self._storage.state_bucket.grant_read_write(grantee)

    def on_run_finished(self, target: events.IRuleTarget, *, statuses: Sequence[str] | None = None) -> events.Rule:
        """A rule sending this deployment's finished runs to ``target``: every final status, or only
        ``statuses`` (of ``RunStatus``' final ones, e.g. ``["failed", "timed_out"]``)."""
        return self._notifications.run_finished(target, statuses)

    def on_order_state_change(self, target: events.IRuleTarget, *,
                              statuses: Sequence[str] | None = None) -> events.Rule:
        """A rule sending every status change of this deployment's orders to ``target``, or only the
        changes to ``statuses`` (``OrderStatus`` values, e.g. ``["awaiting_approval"]``)."""
        return self._notifications.order_state_change(target, statuses)

    def on_drift_detected(self, target: events.IRuleTarget) -> events.Rule:
        """A rule sending this deployment's drift findings (a ``drift: true`` plan that found changes)
        to ``target``."""
        return self._notifications.drift_detected(target)

    def metric_dead_letter_messages(self, **props: Any) -> cloudwatch.IMetric:
        """ApproximateNumberOfMessagesVisible, summed over the dead-letter and worker failure queues."""
        return self._monitoring.metric_dead_letter_messages(**props)

    def metric_watchdog_timeouts(self, **props: Any) -> cloudwatch.IMetric:
        """Watchdog executions that wrote a ``timed_out`` result or job-timeout signal (from its logs)."""
        return self._monitoring.metric_watchdog_timeouts(**props)

    def metric_watchdog_executions_failed(self, **props: Any) -> cloudwatch.IMetric:
        """ExecutionsFailed of the watchdog state machine (a watchdog that could not do its job)."""
        return self._watchdog.state_machine.metric_failed(**props)

    def metric_function_errors(self, **props: Any) -> cloudwatch.IMetric:
        """Errors, summed over the four functions."""
        return self._monitoring.metric_function_errors(**props)

    def metric_api_server_errors(self, **props: Any) -> cloudwatch.IMetric:
        """5XXError of the API."""
        return self._api.rest_api.metric_server_error(**props)

    # ---- read-only attributes ----------------------------------------------------------------------
    @property
    def tables(self) -> dict[str, dynamodb.ITable]:
        """Every table, by ``TableDef.logical_name``."""
        return dict(self._storage.tables)

    @property
    def orders_table(self) -> dynamodb.ITable:
        return self._storage.tables[ORDERS.logical_name]

    @property
    def order_events_table(self) -> dynamodb.ITable:
        return self._storage.tables[ORDER_EVENTS.logical_name]

    @property
    def locks_table(self) -> dynamodb.ITable:
        return self._storage.tables[LOCKS.logical_name]

    @property
    def idempotency_table(self) -> dynamodb.ITable:
        return self._storage.tables[IDEMPOTENCY.logical_name]

    @property
    def internal_bucket(self) -> s3.IBucket:
        return self._storage.internal_bucket

    @property
    def done_bucket(self) -> s3.IBucket:
        return self._storage.done_bucket

    @property
    def state_bucket(self) -> s3.IBucket:
        return self._storage.state_bucket

    @property
    def access_logs_bucket(self) -> s3.IBucket:
        return self._storage.access_logs_bucket

    @property
    def kms_key(self) -> kms.IKey:
        return self._storage.kms_key

    @property
    def webhook_secret(self) -> secretsmanager.ISecret:
        return self._storage.webhook_secret

    @property
    def log_link_secret(self) -> secretsmanager.ISecret:
        """The HMAC key of the log links in PR comments (read by intake, packaging and the orchestrator)."""
        return self._storage.log_link_secret

    @property
    def packaging_queue(self) -> sqs.IQueue:
        return self._queues.queues["packaging"]

    @property
    def callbacks_queue(self) -> sqs.IQueue:
        return self._queues.queues["orchestrator"]

    @property
    def packaging_dead_letter_queue(self) -> sqs.IQueue:
        return self._queues.dead_letter_queues["packaging"]

    @property
    def callbacks_dead_letter_queue(self) -> sqs.IQueue:
        return self._queues.dead_letter_queues["orchestrator"]

    @property
    def worker_failure_queue(self) -> sqs.IQueue:
        return self._queues.worker_failure_queue

    @property
    def image(self) -> ecr_assets.DockerImageAsset:
        return self._image

    @property
    def intake_function(self) -> lambda_.IFunction:
        return self._engine.intake

    @property
    def packaging_function(self) -> lambda_.IFunction:
        return self._engine.packaging

    @property
    def orchestrator_function(self) -> lambda_.IFunction:
        return self._engine.orchestrator

    @property
    def worker_function(self) -> lambda_.IFunction:
        return self._workers.function

    @property
    def worker_project(self) -> codebuild.IProject:
        return self._workers.project

    @property
    def watchdog(self) -> sfn.IStateMachine:
        return self._watchdog.state_machine

    @property
    def watchdog_log_group(self) -> logs.ILogGroup:
        return self._watchdog.log_group

    @property
    def api(self) -> apigw.IRestApi:
        return self._api.rest_api

    @property
    def api_url(self) -> str:
        """The API's base URL: its custom domain's with ``api_domain_name``, else the stage's."""
        if self._api.domain is not None:
            return self._api.public_url() + "/"
        return self._api.rest_api.url

    @property
    def api_domain(self) -> apigw.IDomainName | None:
        """The custom domain (``api_domain_name``), the API's only endpoint, with mutual TLS."""
        return self._api.domain

    @property
    def certificates_table(self) -> dynamodb.ITable | None:
        """Mutual TLS: the client certificates' metadata (``iac-ci certs``), read by intake on every request."""
        return self._storage.certificates.table if self._storage.certificates else None

    @property
    def truststore_bucket(self) -> s3.IBucket | None:
        return self._storage.certificates.truststore_bucket if self._storage.certificates else None

    @property
    def ca_key(self) -> kms.IKey | None:
        """The KMS key of the CA keys' SSM SecureString parameters."""
        return self._storage.certificates.ca_key if self._storage.certificates else None

    @property
    def ca_parameter_prefix(self) -> str | None:
        return self._storage.certificates.parameter_prefix if self._storage.certificates else None

    @property
    def alarms(self) -> tuple[cloudwatch.IAlarm, ...]:
        return self._monitoring.alarms

    @property
    def dashboard(self) -> cloudwatch.Dashboard | None:
        """The deployment's CloudWatch dashboard; None with ``dashboard=False``."""
        return self._monitoring.dashboard

    @property
    def metrics_namespace(self) -> str:
        """Where the run and order metrics are (``IacCi/<unique id>``; ``lambda_runtime.observability.metrics``)."""
        return self._monitoring.namespace

    @property
    def event_bus(self) -> events.IEventBus:
        """Where run and order state changes are published (``schema.events``)."""
        return self._notifications.event_bus

    @property
    def deployment_name(self) -> str:
        """The ``detail.deployment`` of this deployment's events."""
        return self._notifications.deployment_name

    @property
    def schedule_group_name(self) -> str:
        return self._schedules.group_name

    @property
    def owner_schedule_group(self) -> scheduler.CfnScheduleGroup | None:
        """The group of ``schedules`` (the owner's): the runtime neither lists nor changes it."""
        return self._schedules.owner_group

    @property
    def scheduler_role(self) -> iam.IRole:
        """The role the schedules send their firings with (to ``packaging_queue`` only)."""
        return self._schedules.role

    # ---- building blocks ---------------------------------------------------------------------------
    def _check_one_per_stack(self) -> None:
        stack = Stack.of(self)
        others = [c.node.path for c in stack.node.find_all() if isinstance(c, IacCiPipeline) and c is not self]
        if others:
            raise IacCiPipelinePropsError(
                [f"stack '{stack.stack_name}' already has an IacCiPipeline ({others[0]}): one per stack, "
                 "its outputs have fixed names the iac-ci CLI looks up"])

    def _check_client_certificates(self) -> None:
        """With the custom domain, intake refuses every request whose client certificate the
        certificates table does not accept (``lambda_runtime.intake.client_certs``)."""
        certificates = self._storage.certificates
        if certificates is None or self._api.domain is None:
            return
        self._engine.intake.add_environment(deployment.ENV_CLIENT_CERTS_TABLE, certificates.table.table_name)
        certificates.grant_check(self._engine.intake)

    def _mtls_outputs(self) -> dict[str, tuple[str, str]]:
        """What ``iac-ci certs --stack`` and the CLI's mutual TLS read (``CertResources.from_outputs``)."""
        certificates, domain = self._storage.certificates, self._api.domain
        if certificates is None:
            return {}
        values = {
            deployment.OUTPUT_CERTIFICATES_TABLE: (certificates.table.table_name, "Client certificates of mutual TLS"),
            deployment.OUTPUT_TRUSTSTORE_URI: (certificates.truststore_uri, "Truststore of the API's mutual TLS"),
            deployment.OUTPUT_CA_PARAMETER_PREFIX: (certificates.parameter_prefix, "SSM names of the CA keys"),
            deployment.OUTPUT_CA_KEY_ARN: (certificates.ca_key.key_arn, "KMS key of the CA keys"),
        }
        if domain is not None:
            values[deployment.OUTPUT_API_DOMAIN_NAME] = (domain.domain_name, "The API's custom domain (mutual TLS)")
            values[deployment.OUTPUT_API_DOMAIN_TARGET] = (
                domain.domain_name_alias_domain_name, "Point the domain's DNS record (CNAME or alias) here")
        return values

    def _outputs(self) -> None:
        api, storage = self._api.rest_api, self._storage
        values = {
            deployment.OUTPUT_API_URL: (self.api_url, "Base URL of the iac-ci API"),
            deployment.OUTPUT_WEBHOOK_SECRET_ARN: (storage.webhook_secret.secret_arn,
                                                   "Secret holding the HMAC key that signs API requests"),
            deployment.OUTPUT_DONE_BUCKET: (storage.done_bucket.bucket_name, "Final run summaries: <run_id>/done"),
            deployment.OUTPUT_INTERNAL_BUCKET: (storage.internal_bucket.bucket_name, "Jobs, bundles, logs, callbacks"),
            deployment.OUTPUT_STATE_BUCKET: (storage.state_bucket.bucket_name, "IAC_CI_STATE_BUCKET of every order"),
            deployment.OUTPUT_ORDERS_TABLE: (self.orders_table.table_name, "Runs and their orders"),
            deployment.OUTPUT_EVENTS_TABLE: (self.order_events_table.table_name, "Audit trail of every run"),
        }
        if self.props.github_webhook_secret is not None:
            values[deployment.OUTPUT_GITHUB_WEBHOOK_URL] = (
                api.url_for_path("/webhooks/github"), "Payload URL of the repositories' GitHub webhook")
        values.update(self._mtls_outputs())
        scope = Construct(self, "Outputs")
        for name, (value, description) in values.items():
            output = CfnOutput(scope, name, value=value, description=description)
            output.override_logical_id(name)  # the CLI reads these exact output keys
