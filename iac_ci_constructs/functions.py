"""One Lambda function of the single runtime image, built the same way for every component."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from aws_cdk import Duration, Size
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from iac_ci_constructs import defaults, nag
from iac_ci_constructs import iam as policies
from iac_ci_constructs.props import IacCiPipelineProps
from lambda_runtime.observability.xray import TRACE_DISABLED_ENV
from lambda_runtime.schema import deployment

# Function timeouts (schema.deployment): the queues' visibility timeouts derive from them too
FUNCTION_TIMEOUT_SECONDS = {
    "intake": deployment.INTAKE_TIMEOUT_SECONDS,
    "packaging": deployment.PACKAGING_TIMEOUT_SECONDS,
    "orchestrator": deployment.ORCHESTRATOR_TIMEOUT_SECONDS,
    "worker": deployment.WORKER_FUNCTION_TIMEOUT_SECONDS,
}


def image_function(
    scope: Construct,
    id: str,
    component: str,
    statements: Sequence[iam.PolicyStatement],
    *,
    props: IacCiPipelineProps,
    image: ecr_assets.DockerImageAsset,
    environment: Mapping[str, str],
    memory_mib: int,
    ephemeral_storage_mib: int | None = None,
    vpc: ec2.IVpc | None = None,
    vpc_subnets: ec2.SubnetSelection | None = None,
    retry_attempts: int | None = None,
    on_failure: lambda_.IDestination | None = None,
    max_event_age: Duration | None = None,
    reserved_concurrency: int | None = None,
) -> lambda_.DockerImageFunction:
    """The function of ``component`` under ``scope/id``: its own role (explicit statements only),
    log group, X-Ray tracing (unless ``props.tracing`` is off), and the image command naming its
    handler; ``reserved_concurrency`` (``None``: unreserved) is both its guaranteed and its maximum
    number of concurrent executions."""
    group = Construct(scope, id)
    role = defaults.service_role(group, "Role", "lambda.amazonaws.com", f"iac-ci {component} function")
    for statement in statements:
        role.add_to_principal_policy(statement)
    log_group = defaults.log_group(group, "LogGroup", retention=props.log_retention,
                                   removal_policy=props.removal_policy)
    log_group.grant_write(role)
    # Actions without resource-level permissions (X-Ray; ENIs for a VPC) live in a policy of their
    # own: its Resource "*" suppression then cannot hide a wildcard added to the role later.
    unscoped = [policies.allow("Tracing", sorted(nag.LAMBDA_XRAY_ACTIONS), ["*"])] if props.tracing else []
    if vpc is not None:  # what AWSLambdaVPCAccessExecutionRole would grant, without a managed policy
        unscoped.append(policies.allow("VpcNetworkInterfaces", nag.VPC_ENI_ACTIONS, ["*"]))
    unscoped_policy = iam.Policy(group, "UnscopedActionsPolicy", statements=unscoped, roles=[role]) \
        if unscoped else None
    # tracing off: the runtime sends no segments of its own either (``lambda_runtime.observability.xray``)
    tracing_env = {} if props.tracing else {TRACE_DISABLED_ENV: "true"}
    function = lambda_.DockerImageFunction(
        group, "Function",
        code=lambda_.DockerImageCode.from_ecr(image.repository, tag_or_digest=image.image_tag,
                                              cmd=[deployment.HANDLERS[component]]),
        architecture=props.architecture,
        description=f"iac-ci {component} ({deployment.HANDLERS[component]})",
        environment={**environment, "POWERTOOLS_SERVICE_NAME": f"iac-ci-{component}", **tracing_env},
        memory_size=memory_mib,
        ephemeral_storage_size=None if ephemeral_storage_mib is None else Size.mebibytes(ephemeral_storage_mib),
        timeout=Duration.seconds(FUNCTION_TIMEOUT_SECONDS[component]),
        role=role, log_group=log_group, vpc=vpc, vpc_subnets=vpc_subnets,
        retry_attempts=retry_attempts, on_failure=on_failure, max_event_age=max_event_age,
        reserved_concurrent_executions=reserved_concurrency,
    )
    if props.tracing:  # active tracing without Tracing.ACTIVE, which would add the X-Ray statement to the main policy
        cast(lambda_.CfnFunction, function.node.default_child).add_property_override("TracingConfig.Mode", "Active")
    if unscoped_policy is not None:
        function.node.add_dependency(unscoped_policy)  # ENI rights must exist when a VPC function is created
    return function
