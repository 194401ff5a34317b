"""The ``Workers`` namespace: what runs an order, the worker function and the CodeBuild project.

Both run the runtime image with the same role statements (decrypt with the sops key, for the
run and order of the bundle, and nothing else): everything else an order reaches is through
presigned URLs. In a VPC (``props.vpc``), both get network interfaces in the worker subnets.

The CodeBuild buildspec is one command, ``exec``-ing the worker, and no ``run-as``: the worker
runs as root and runs the order's commands as the image's unprivileged ``iac-ci-order`` itself
(``lambda_runtime.worker.sandbox``). With ``run-as`` the worker would share the commands' uid,
so its files (the order directory, the artifacts it packs) would be theirs to change, as on
Lambda, where there is no root to keep.

Orders may run on another allowed image (``props.images``): dispatch starts the build with
``imageOverride`` (with ``privilegedModeOverride`` for an image allowed to run privileged, and
``imagePullCredentialsTypeOverride: SERVICE_ROLE``). The overrides need no IAM permission of their
own: ``codebuild:StartBuild`` on the project (the orchestrator's) covers every override, and
privileged mode is not an IAM matter. What they do need is on the project's service role, which
CodeBuild pulls the image with under ``SERVICE_ROLE`` credentials: for an ECR image, the pull
actions on its repository and ``ecr:GetAuthorizationToken`` (``iam.image_pulls``; a repository in
another account must also allow this role in its repository policy); a public registry image
needs nothing. A private non-ECR registry would need ``registryCredentialOverride`` and the
secret's ``secretsmanager:GetSecretValue``, which ``images`` does not offer.

Until this namespace existed they were direct children of the pipeline (``Worker/...``,
``WorkerBuild/...``): ``keep_logical_ids`` gives them the logical ids of those paths, so an
existing stack updates them in place instead of replacing them.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from iac_ci_constructs import defaults
from iac_ci_constructs import iam as policies
from iac_ci_constructs.functions import image_function
from iac_ci_constructs.logical_ids import keep_logical_ids
from iac_ci_constructs.props import IacCiPipelineProps
from iac_ci_constructs.worker_images import repository_arns
from lambda_runtime.schema import deployment
from lambda_runtime.schema.contract import BUILDSPEC_COMMAND

CODEBUILD_TIMEOUT = Duration.hours(8)  # the dispatcher's per-build override is at most 480 minutes
MAX_EVENT_AGE_SECONDS = (60, 6 * 3600)  # the bounds Lambda accepts for an asynchronous event's age


@dataclass(frozen=True)
class Workers:
    function: lambda_.DockerImageFunction  # orders with target: lambda
    project: codebuild.Project  # orders with target: codebuild


def build_workers(
    scope: Construct,
    props: IacCiPipelineProps,
    *,
    image: ecr_assets.DockerImageAsset,
    sops_key: kms.IKey,
    failure_queue: sqs.IQueue,
) -> Workers:
    """``scope/Workers``, with the logical ids the workers had as direct children of ``scope``."""
    group = Construct(scope, "Workers")
    subnets = None
    if props.vpc is not None:
        subnets = props.vpc_subnets or ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
    low, high = MAX_EVENT_AGE_SECONDS
    function = image_function(
        group, "Worker", "worker", policies.worker(sops_key=sops_key), props=props, image=image, environment={},
        memory_mib=props.worker_memory_mib, ephemeral_storage_mib=props.worker_ephemeral_storage_mib,
        vpc=props.vpc, vpc_subnets=subnets,
        retry_attempts=deployment.WORKER_ASYNC_RETRIES,
        on_failure=destinations.SqsDestination(failure_queue),
        # an invocation Lambda could not start within the watchdog's grace is dropped (to the
        # failure queue) rather than run an order the watchdog is about to declare timed out
        max_event_age=Duration.seconds(min(high, max(low, props.watchdog_grace_seconds))),
        reserved_concurrency=props.worker_reserved_concurrency,  # None: unreserved, no cap
    )
    project = _codebuild_worker(group, props, image=image, sops_key=sops_key, subnets=subnets)
    keep_logical_ids(group)
    return Workers(function=function, project=project)


def _codebuild_worker(
    scope: Construct,
    props: IacCiPipelineProps,
    *,
    image: ecr_assets.DockerImageAsset,
    sops_key: kms.IKey,
    subnets: ec2.SubnetSelection | None,
) -> codebuild.Project:
    group = Construct(scope, "WorkerBuild")
    role = defaults.service_role(group, "Role", "codebuild.amazonaws.com", "iac-ci worker CodeBuild project")
    for statement in [*policies.worker(sops_key=sops_key),
                      *policies.image_pulls(repository_arns(Stack.of(scope), props.images))]:
        role.add_to_principal_policy(statement)
    log_group = defaults.log_group(group, "LogGroup", retention=props.log_retention,
                                   removal_policy=props.removal_policy)
    image_class = codebuild.LinuxArmBuildImage if props.is_arm64 else codebuild.LinuxBuildImage
    return codebuild.Project(
        group, "Project",
        description=f"iac-ci worker: runs one order ({BUILDSPEC_COMMAND})",
        build_spec=codebuild.BuildSpec.from_object(
            {"version": "0.2", "phases": {"build": {"commands": [BUILDSPEC_COMMAND]}}}),
        environment=codebuild.BuildEnvironment(
            build_image=image_class.from_ecr_repository(image.repository, image.image_tag),
            compute_type=props.codebuild_compute_type, privileged=False),
        role=role, timeout=CODEBUILD_TIMEOUT, vpc=props.vpc, subnet_selection=subnets,
        logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)),
    )
