"""``IacCiPipeline``: the whole iac-ci engine in one construct.

The smallest deployment is ``IacCiPipeline(stack, "IacCi")``. Everything the runtime needs to
agree on comes from ``lambda_runtime.schema`` (tables, S3 layout, handlers, notifications, routes,
outputs, timeouts) and ``lambda_runtime.settings`` (each function's environment), so the
deployed stack and the embedded runner cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import CfnOutput, Duration, Size, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from iac_ci_constructs import defaults, image, nag
from iac_ci_constructs import iam as policies
from iac_ci_constructs.monitoring import Monitoring
from iac_ci_constructs.props import IacCiPipelineProps, IacCiPipelinePropsError
from lambda_runtime import watchdog as watchdog_definition
from lambda_runtime.schema import deployment, layout
from lambda_runtime.schema.contract import BUILDSPEC_COMMAND
from lambda_runtime.schema.tables import IDEMPOTENCY, LOCKS, ORDER_EVENTS, ORDERS, TABLES
from lambda_runtime.settings import Settings

# Function timeouts (schema.deployment) and the queue each S3 prefix feeds (schema.deployment.NOTIFICATIONS)
FUNCTION_TIMEOUT_SECONDS = {
    "intake": deployment.INTAKE_TIMEOUT_SECONDS,
    "packaging": deployment.PACKAGING_TIMEOUT_SECONDS,
    "orchestrator": deployment.ORCHESTRATOR_TIMEOUT_SECONDS,
    "worker": deployment.WORKER_FUNCTION_TIMEOUT_SECONDS,
}
QUEUE_IDS = {"packaging": "Packaging", "orchestrator": "Callbacks"}  # consumer -> queue construct id prefix
EVENT_SOURCE_BATCH_SIZE = {
    "packaging": 1,  # one job may take the function's whole timeout: never queue others behind it
    "orchestrator": 10,
}
INTAKE_MEMORY_MIB = 512
ORCHESTRATOR_MEMORY_MIB = 512
PACKAGING_EPHEMERAL_STORAGE_MIB = 2048
CODEBUILD_TIMEOUT = Duration.hours(8)  # the dispatcher's per-build override is at most 480 minutes
API_STAGE = "v1"
SERVER_ACCESS_LOGS_FLAG = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"


class IacCiPipeline(Construct):
    """Serverless CD for infrastructure as code: API intake, packaging, orchestration, Lambda and
    CodeBuild workers and a Step Functions watchdog, with tables, buckets, queues, alarms and outputs.

    Keyword arguments are the fields of ``IacCiPipelineProps`` (all optional); invalid values raise
    ``IacCiPipelinePropsError`` listing every problem at once. One pipeline per stack: the stack
    outputs (``schema.deployment.OUTPUT_*``) have fixed names the ``iac-ci`` CLI looks up.
    """

    def __init__(self, scope: Construct, id: str, **props: Any) -> None:
        super().__init__(scope, id)
        self.props = IacCiPipelineProps.from_kwargs(props)
        p = self.props
        self._check_one_per_stack()
        # bucket policies, not ACLs, for server access log delivery (ACLs are disabled on our buckets)
        self.node.set_context(SERVER_ACCESS_LOGS_FLAG, True)
        stack = Stack.of(self)

        # ---- state -------------------------------------------------------------------------
        storage = Construct(self, "Storage")
        self._tables = {t.logical_name: defaults.table(storage, t, removal_policy=p.removal_policy) for t in TABLES}
        self._access_logs_bucket = p.existing_access_logs_bucket or defaults.access_logs_bucket(
            storage, "AccessLogsBucket", removal_policy=p.removal_policy)
        self._internal_bucket = defaults.bucket(
            storage, "InternalBucket", removal_policy=p.removal_policy, access_logs=self._access_logs_bucket,
            lifecycle_rules=[  # everything the engine writes there: submissions, callbacks, runs
                defaults.expiring(prefix, p.internal_object_retention_days)
                for prefix in dict.fromkeys([*deployment.NOTIFICATIONS, layout.RUNS_PREFIX])
            ],
        )
        self._done_bucket = defaults.bucket(storage, "DoneBucket", removal_policy=p.removal_policy,
                                            access_logs=self._access_logs_bucket)
        self._state_bucket = defaults.bucket(storage, "StateBucket", removal_policy=p.removal_policy,
                                             access_logs=self._access_logs_bucket)
        self._kms_key: kms.IKey = p.existing_kms_key or kms.Key(
            storage, "SopsKey", description="iac-ci: sops-encrypted secrets of order bundles",
            enable_key_rotation=True, removal_policy=p.removal_policy,
        )
        self._webhook_secret: secretsmanager.ISecret = p.existing_webhook_secret or secretsmanager.Secret(
            storage, "WebhookSecret", description="iac-ci: HMAC-SHA256 key signing requests to the API",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
            removal_policy=p.removal_policy,
        )
        table_grants = policies.Tables(orders=self.orders_table, events=self.order_events_table,
                                       locks=self.locks_table, idempotency=self.idempotency_table)

        # ---- queues: S3 prefixes -> the consuming function's queue (with its DLQ) -------------
        queues = Construct(self, "Queues")
        self._queues: dict[str, sqs.Queue] = {}
        self._dead_letter_queues: dict[str, sqs.Queue] = {}
        for consumer in dict.fromkeys(deployment.NOTIFICATIONS.values()):
            name = QUEUE_IDS[consumer]
            dlq = defaults.queue(queues, f"{name}DeadLetterQueue")
            self._dead_letter_queues[consumer] = dlq
            self._queues[consumer] = defaults.queue(
                queues, f"{name}Queue", dead_letter_queue=dlq,
                visibility_timeout=Duration.seconds(
                    deployment.QUEUE_VISIBILITY_FACTOR * FUNCTION_TIMEOUT_SECONDS[consumer]),
            )
        for prefix, consumer in deployment.NOTIFICATIONS.items():
            self._internal_bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED, s3n.SqsDestination(self._queues[consumer]),
                s3.NotificationKeyFilter(prefix=prefix))
        self._worker_failure_queue = defaults.queue(queues, "WorkerFailureQueue")

        # ---- the one image -------------------------------------------------------------------
        platform = "linux/arm64" if p.is_arm64 else "linux/amd64"
        self._image = ecr_assets.DockerImageAsset(
            self, "Image", directory=str(image.image_directory(p.image_directory)),
            platform=ecr_assets.Platform.custom(platform), build_args={"IMAGE_PLATFORM": platform},
            display_name="iac-ci runtime",
        )

        # ---- workers -------------------------------------------------------------------------
        worker_subnets = (p.vpc_subnets or ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
                          if p.vpc is not None else None)
        self._worker_function = self._function(
            "Worker", "worker", policies.worker(sops_key=self._kms_key), environment={},
            memory_mib=p.worker_memory_mib, ephemeral_storage_mib=p.worker_ephemeral_storage_mib,
            vpc=p.vpc, vpc_subnets=worker_subnets,
            retry_attempts=deployment.WORKER_ASYNC_RETRIES,
            on_failure=destinations.SqsDestination(self._worker_failure_queue),
            # an invocation Lambda could not start within the watchdog's grace is dropped (to the
            # failure queue) rather than run an order the watchdog is about to declare timed out
            max_event_age=Duration.seconds(min(6 * 3600, max(60, p.watchdog_grace_seconds))),
        )
        self._worker_project = self._codebuild_worker(worker_subnets)

        # ---- watchdog ------------------------------------------------------------------------
        wd = Construct(self, "Watchdog")
        self._watchdog_log_group = defaults.log_group(wd, "LogGroup", retention=p.log_retention,
                                                      removal_policy=p.removal_policy)
        watchdog_role = defaults.service_role(wd, "Role", "states.amazonaws.com", "iac-ci watchdog")
        for statement in policies.watchdog(internal=self._internal_bucket):
            watchdog_role.add_to_principal_policy(statement)
        self._watchdog = sfn.StateMachine(
            wd, "StateMachine",
            definition_body=sfn.DefinitionBody.from_string(watchdog_definition.definition_text()),
            state_machine_type=sfn.StateMachineType.STANDARD, role=watchdog_role, tracing_enabled=True,
            logs=sfn.LogOptions(destination=self._watchdog_log_group, level=sfn.LogLevel.ALL,
                                include_execution_data=False),
            comment="iac-ci watchdog: writes timed_out for an order (or the job) that did not report in time",
        )

        # ---- engine functions ------------------------------------------------------------------
        settings = Settings(
            orders_table=self.orders_table.table_name,
            events_table=self.order_events_table.table_name,
            locks_table=self.locks_table.table_name,
            idempotency_table=self.idempotency_table.table_name,
            internal_bucket=self._internal_bucket.bucket_name,
            done_bucket=self._done_bucket.bucket_name,
            state_bucket=self._state_bucket.bucket_name,
            kms_key_arn=self._kms_key.key_arn,
            watchdog_arn=self._watchdog.state_machine_arn,
            webhook_secret_id=self._webhook_secret.secret_arn,
            worker_function=self._worker_function.function_name,
            codebuild_project=self._worker_project.project_name,
            region=stack.region,
            allowed_ssm_prefixes=tuple(p.allowed_ssm_prefixes),
            allowed_secret_prefixes=tuple(p.allowed_secret_prefixes),
            allowed_role_arns=tuple(p.allowed_role_arns),
            allowed_source_buckets=tuple(b.bucket_name for b in p.allowed_source_buckets),
            watchdog_grace_seconds=p.watchdog_grace_seconds,
            github_webhook_secret_id=p.github_webhook_secret.secret_arn if p.github_webhook_secret else "",
            github_token_secret_id=p.github_token_secret.secret_arn if p.github_token_secret else "",
            github_app_secret_id=p.github_app_secret.secret_arn if p.github_app_secret else "",
            github_api_url=p.github_api_url,
        )
        self.settings = settings
        env = settings.to_env()
        self._packaging_function = self._function(
            "Packaging", "packaging",
            policies.packaging(
                tables=table_grants, internal=self._internal_bucket, source_buckets=p.allowed_source_buckets,
                sops_key=self._kms_key, ssm_prefixes=p.allowed_ssm_prefixes,
                secret_prefixes=p.allowed_secret_prefixes, role_arns=p.allowed_role_arns, stack=stack),
            environment=env, memory_mib=p.packaging_memory_mib, ephemeral_storage_mib=PACKAGING_EPHEMERAL_STORAGE_MIB,
        )
        self._orchestrator_function = self._function(
            "Orchestrator", "orchestrator",
            policies.orchestrator(
                tables=table_grants, internal=self._internal_bucket, done=self._done_bucket, watchdog=self._watchdog,
                worker_function=self._worker_function, worker_project=self._worker_project),
            environment=env, memory_mib=ORCHESTRATOR_MEMORY_MIB,
        )
        self._intake_function = self._function(
            "Intake", "intake",
            policies.intake(tables=table_grants, internal=self._internal_bucket, watchdog=self._watchdog),
            environment=env, memory_mib=INTAKE_MEMORY_MIB,
        )
        self._webhook_secret.grant_read(self._intake_function)
        if p.github_webhook_secret is not None:
            p.github_webhook_secret.grant_read(self._intake_function)
        for github_credentials in (p.github_token_secret, p.github_app_secret):
            if github_credentials is not None:  # API calls from packaging (events) and orchestrator (comments)
                github_credentials.grant_read(self._packaging_function)
                github_credentials.grant_read(self._orchestrator_function)
        consumers = {"packaging": self._packaging_function, "orchestrator": self._orchestrator_function}
        for consumer, queue in self._queues.items():
            consumers[consumer].add_event_source(event_sources.SqsEventSource(
                queue, batch_size=EVENT_SOURCE_BATCH_SIZE[consumer], report_batch_item_failures=True))

        # ---- API -------------------------------------------------------------------------------
        self._api = self._rest_api()
        self._intake_integration = apigw.LambdaIntegration(self._intake_function, allow_test_invoke=False)
        for method, path in deployment.ROUTES:
            self.add_route(method, path)

        # ---- monitoring, outputs, nag ----------------------------------------------------------
        self._monitoring = Monitoring(
            self, "Monitoring",
            dead_letter_queues={f"{QUEUE_IDS[c]}DeadLetterQueue": q for c, q in self._dead_letter_queues.items()}
            | {"WorkerFailureQueue": self._worker_failure_queue},
            functions={"Intake": self._intake_function, "Packaging": self._packaging_function,
                       "Orchestrator": self._orchestrator_function, "Worker": self._worker_function},
            watchdog=self._watchdog, watchdog_log_group=self._watchdog_log_group, api=self._api,
            alarm_topic=p.alarm_topic,
        )
        self._outputs()
        nag.suppress(self)

    # ---- public API ------------------------------------------------------------------------------
    def add_route(self, method: str, path: str, integration: apigw.Integration | None = None) -> apigw.Method:
        """Serve ``method path`` (e.g. ``POST /webhooks/github``); default: proxied to the intake function.

        Requests are authenticated by the function (HMAC signature), not by API Gateway."""
        resource = self._api.root.resource_for_path(path)
        added = resource.add_method(
            method.upper(), integration or self._intake_integration,
            authorization_type=apigw.AuthorizationType.NONE, request_validator=self._request_validator,
        )
        nag.suppress_method(added)
        return added

    def grant_submit(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` submit, follow and cancel runs (``iac-ci submit/status/cancel``): read this
        stack's outputs (how the CLI finds the API), read the webhook secret (the HMAC key) and invoke
        the API's routes."""
        stack = Stack.of(self)
        describe = iam.Grant.add_to_principal(
            grantee=grantee, actions=["cloudformation:DescribeStacks"], resource_arns=[stack.stack_id])
        invoke = iam.Grant.add_to_principal(
            grantee=grantee, actions=["execute-api:Invoke"],
            resource_arns=[self._api.arn_for_execute_api(stage=API_STAGE)],
        )
        return self._webhook_secret.grant_read(grantee).combine(describe).combine(invoke)

    def grant_read_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read the final run summaries (``s3://<done bucket>/<run_id>/done``)."""
        return self._done_bucket.grant_read(grantee, layout.done_key("*"))

    def grant_state_read_write(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` (typically a role orders assume, for Terraform's S3 backend) use the state bucket."""
        return self._state_bucket.grant_read_write(grantee)

    def metric_dead_letter_messages(self, **props: Any) -> cloudwatch.IMetric:
        """ApproximateNumberOfMessagesVisible, summed over the dead-letter and worker failure queues."""
        return self._monitoring.metric_dead_letter_messages(**props)

    def metric_watchdog_timeouts(self, **props: Any) -> cloudwatch.IMetric:
        """Watchdog executions that wrote a ``timed_out`` result or job-timeout signal (from its logs)."""
        return self._monitoring.metric_watchdog_timeouts(**props)

    def metric_watchdog_executions_failed(self, **props: Any) -> cloudwatch.IMetric:
        """ExecutionsFailed of the watchdog state machine (a watchdog that could not do its job)."""
        return self._watchdog.metric_failed(**props)

    def metric_function_errors(self, **props: Any) -> cloudwatch.IMetric:
        """Errors, summed over the four functions."""
        return self._monitoring.metric_function_errors(**props)

    def metric_api_server_errors(self, **props: Any) -> cloudwatch.IMetric:
        """5XXError of the API."""
        return self._api.metric_server_error(**props)

    # ---- read-only attributes ----------------------------------------------------------------------
    @property
    def tables(self) -> dict[str, dynamodb.ITable]:
        """Every table, by ``TableDef.logical_name``."""
        return dict(self._tables)

    @property
    def orders_table(self) -> dynamodb.ITable:
        return self._tables[ORDERS.logical_name]

    @property
    def order_events_table(self) -> dynamodb.ITable:
        return self._tables[ORDER_EVENTS.logical_name]

    @property
    def locks_table(self) -> dynamodb.ITable:
        return self._tables[LOCKS.logical_name]

    @property
    def idempotency_table(self) -> dynamodb.ITable:
        return self._tables[IDEMPOTENCY.logical_name]

    @property
    def internal_bucket(self) -> s3.IBucket:
        return self._internal_bucket

    @property
    def done_bucket(self) -> s3.IBucket:
        return self._done_bucket

    @property
    def state_bucket(self) -> s3.IBucket:
        return self._state_bucket

    @property
    def access_logs_bucket(self) -> s3.IBucket:
        return self._access_logs_bucket

    @property
    def kms_key(self) -> kms.IKey:
        return self._kms_key

    @property
    def webhook_secret(self) -> secretsmanager.ISecret:
        return self._webhook_secret

    @property
    def packaging_queue(self) -> sqs.IQueue:
        return self._queues["packaging"]

    @property
    def callbacks_queue(self) -> sqs.IQueue:
        return self._queues["orchestrator"]

    @property
    def packaging_dead_letter_queue(self) -> sqs.IQueue:
        return self._dead_letter_queues["packaging"]

    @property
    def callbacks_dead_letter_queue(self) -> sqs.IQueue:
        return self._dead_letter_queues["orchestrator"]

    @property
    def worker_failure_queue(self) -> sqs.IQueue:
        return self._worker_failure_queue

    @property
    def image(self) -> ecr_assets.DockerImageAsset:
        return self._image

    @property
    def intake_function(self) -> lambda_.IFunction:
        return self._intake_function

    @property
    def packaging_function(self) -> lambda_.IFunction:
        return self._packaging_function

    @property
    def orchestrator_function(self) -> lambda_.IFunction:
        return self._orchestrator_function

    @property
    def worker_function(self) -> lambda_.IFunction:
        return self._worker_function

    @property
    def worker_project(self) -> codebuild.IProject:
        return self._worker_project

    @property
    def watchdog(self) -> sfn.IStateMachine:
        return self._watchdog

    @property
    def watchdog_log_group(self) -> logs.ILogGroup:
        return self._watchdog_log_group

    @property
    def api(self) -> apigw.IRestApi:
        return self._api

    @property
    def api_url(self) -> str:
        return self._api.url

    @property
    def alarms(self) -> tuple[cloudwatch.IAlarm, ...]:
        return self._monitoring.alarms

    # ---- building blocks ---------------------------------------------------------------------------
    def _check_one_per_stack(self) -> None:
        stack = Stack.of(self)
        others = [c.node.path for c in stack.node.find_all() if isinstance(c, IacCiPipeline) and c is not self]
        if others:
            raise IacCiPipelinePropsError(
                [f"stack '{stack.stack_name}' already has an IacCiPipeline ({others[0]}): one per stack, "
                 "its outputs have fixed names the iac-ci CLI looks up"])

    def _function(
        self,
        id: str,
        component: str,
        statements: Sequence[iam.PolicyStatement],
        *,
        environment: dict[str, str],
        memory_mib: int,
        ephemeral_storage_mib: int | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        **function_props: Any,
    ) -> lambda_.DockerImageFunction:
        """One function of the single image: its own role (explicit statements only), log group,
        X-Ray tracing, and the image command naming its handler."""
        p = self.props
        scope = Construct(self, id)
        role = defaults.service_role(scope, "Role", "lambda.amazonaws.com", f"iac-ci {component} function")
        for statement in statements:
            role.add_to_principal_policy(statement)
        log_group = defaults.log_group(scope, "LogGroup", retention=p.log_retention, removal_policy=p.removal_policy)
        log_group.grant_write(role)
        # Actions without resource-level permissions (X-Ray; ENIs for a VPC) live in a policy of their
        # own: its Resource "*" suppression then cannot hide a wildcard added to the role later.
        unscoped = [policies.allow("Tracing", sorted(nag.LAMBDA_XRAY_ACTIONS), ["*"])]
        if vpc is not None:  # what AWSLambdaVPCAccessExecutionRole would grant, without a managed policy
            unscoped.append(policies.allow("VpcNetworkInterfaces", nag.VPC_ENI_ACTIONS, ["*"]))
        unscoped_policy = iam.Policy(scope, "UnscopedActionsPolicy", statements=unscoped, roles=[role])
        function = lambda_.DockerImageFunction(
            scope, "Function",
            code=lambda_.DockerImageCode.from_ecr(self._image.repository, tag_or_digest=self._image.image_tag,
                                                  cmd=[deployment.HANDLERS[component]]),
            architecture=p.architecture,
            description=f"iac-ci {component} ({deployment.HANDLERS[component]})",
            environment={**environment, "POWERTOOLS_SERVICE_NAME": f"iac-ci-{component}"},
            memory_size=memory_mib,
            ephemeral_storage_size=(
                None if ephemeral_storage_mib is None else Size.mebibytes(ephemeral_storage_mib)),
            timeout=Duration.seconds(FUNCTION_TIMEOUT_SECONDS[component]),
            role=role, log_group=log_group, vpc=vpc, vpc_subnets=vpc_subnets,
            **function_props,
        )
        # active tracing without Tracing.ACTIVE, which would add the X-Ray statement to the role's main policy
        function.node.default_child.add_property_override("TracingConfig.Mode", "Active")
        function.node.add_dependency(unscoped_policy)  # ENI rights must exist when a VPC function is created
        return function

    def _codebuild_worker(self, subnets: ec2.SubnetSelection | None) -> codebuild.Project:
        p = self.props
        scope = Construct(self, "WorkerBuild")
        role = defaults.service_role(scope, "Role", "codebuild.amazonaws.com", "iac-ci worker CodeBuild project")
        for statement in policies.worker(sops_key=self._kms_key):
            role.add_to_principal_policy(statement)
        log_group = defaults.log_group(scope, "LogGroup", retention=p.log_retention, removal_policy=p.removal_policy)
        image_class = codebuild.LinuxArmBuildImage if p.is_arm64 else codebuild.LinuxBuildImage
        return codebuild.Project(
            scope, "Project",
            description=f"iac-ci worker: runs one order ({BUILDSPEC_COMMAND})",
            build_spec=codebuild.BuildSpec.from_object(
                {"version": "0.2", "phases": {"build": {"commands": [BUILDSPEC_COMMAND]}}}),
            environment=codebuild.BuildEnvironment(
                build_image=image_class.from_ecr_repository(self._image.repository, self._image.image_tag),
                compute_type=p.codebuild_compute_type, privileged=False),
            role=role, timeout=CODEBUILD_TIMEOUT, vpc=p.vpc, subnet_selection=subnets,
            logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)),
        )

    def _rest_api(self) -> apigw.RestApi:
        p = self.props
        scope = Construct(self, "Api")
        access_logs = defaults.log_group(scope, "AccessLogs", retention=p.log_retention,
                                         removal_policy=p.removal_policy)
        api = apigw.RestApi(
            scope, "RestApi",
            description="iac-ci: submit, follow and cancel runs (HMAC-signed requests)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=p.api_cloud_watch_role,
            cloud_watch_role_removal_policy=p.removal_policy if p.api_cloud_watch_role else None,
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE,
                throttling_rate_limit=p.api_throttling_rate_limit_per_second,
                throttling_burst_limit=p.api_throttling_burst_limit,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=False),
                logging_level=apigw.MethodLoggingLevel.ERROR, data_trace_enabled=False,
                metrics_enabled=True, tracing_enabled=True,
            ),
        )
        self._request_validator = api.add_request_validator(
            "RequestValidator", validate_request_parameters=True, validate_request_body=False)
        return api

    def _outputs(self) -> None:
        values = {
            deployment.OUTPUT_API_URL: (self._api.url, "Base URL of the iac-ci API"),
            deployment.OUTPUT_WEBHOOK_SECRET_ARN: (self._webhook_secret.secret_arn,
                                                   "Secret holding the HMAC key that signs API requests"),
            deployment.OUTPUT_DONE_BUCKET: (self._done_bucket.bucket_name, "Final run summaries: <run_id>/done"),
            deployment.OUTPUT_INTERNAL_BUCKET: (self._internal_bucket.bucket_name, "Jobs, bundles, logs, callbacks"),
            deployment.OUTPUT_STATE_BUCKET: (self._state_bucket.bucket_name, "IAC_CI_STATE_BUCKET of every order"),
            deployment.OUTPUT_ORDERS_TABLE: (self.orders_table.table_name, "Runs and their orders"),
            deployment.OUTPUT_EVENTS_TABLE: (self.order_events_table.table_name, "Audit trail of every run"),
        }
        if self.props.github_webhook_secret is not None:
            values[deployment.OUTPUT_GITHUB_WEBHOOK_URL] = (
                self._api.url_for_path("/webhooks/github"), "Payload URL of the repositories' GitHub webhook")
        scope = Construct(self, "Outputs")
        for name, (value, description) in values.items():
            output = CfnOutput(scope, name, value=value, description=description)
            output.override_logical_id(name)  # the CLI reads these exact output keys

