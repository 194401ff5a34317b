"""The role iac-ci's own deploy workflow (``.github/workflows/deploy.yml``) assumes: a CDK app of its own.

    IAC_CI_GITHUB_REPO=acme/iac-ci npx cdk deploy --app ".venv/bin/python sample_app/deploy_role.py"

Deployed once per account and region, by someone allowed to create IAM roles; its ``RoleArn``
output is the workflow's ``IAC_CI_DEPLOY_ROLE_ARN`` variable. It holds:

- GitHub's OIDC provider (``token.actions.githubusercontent.com``). An account has at most one per
  URL: give ``IAC_CI_OIDC_PROVIDER_ARN`` to use the one it has.
- A role only a token of this repository's GitHub environment may assume (``sub`` is
  ``repo:OWNER/NAME:environment:NAME``, ``aud`` is ``sts.amazonaws.com``). GitHub mints such a
  token only for a job that names the environment, and only once the environment's rules pass:
  restrict its deployment branches to ``main`` in the repository's settings, and nothing else
  (a pull request, another branch, another repository) can obtain the role.

What the role may do is what the workflow's steps need, each on named resources:

- assume the CDK bootstrap roles of this account and region (deploy, file and image publishing,
  lookup), so ``cdk deploy`` works the way CDK is designed: CloudFormation's execution role
  changes the resources, never this role;
- check that the bootstrap exists (its version parameter, its staging bucket and image repository);
- read the iac-ci stack's outputs and its API signing secret, for ``iac-ci smoke --stack``, and
  its resources' physical ids, archived for teardown.

Environment variables: ``IAC_CI_GITHUB_REPO`` (required), ``IAC_CI_DEPLOY_ENVIRONMENT`` (default
``production``), ``IAC_CI_STACK_NAME`` (the stack the workflow deploys, default ``IacCi``),
``IAC_CI_CDK_QUALIFIER`` (default ``hnb659fds``, CDK's), ``IAC_CI_OIDC_PROVIDER_ARN``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout without installing

from aws_cdk import App, Aspects, CfnOutput, Duration, Environment, Stack  # noqa: E402
from aws_cdk import aws_iam as iam  # noqa: E402
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions  # noqa: E402
from constructs import Construct  # noqa: E402

from iac_ci_constructs.nag import flatten_cfn_reference  # noqa: E402

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"
DEFAULT_QUALIFIER = "hnb659fds"  # `cdk bootstrap`'s default
BOOTSTRAP_ROLES = ("deploy", "file-publishing", "image-publishing", "lookup")
# The logical id of the API signing secret in the sample app's stack (``IacCi`` construct, ``Storage``
# group): CloudFormation tags the secret with it, which is how the role finds that one secret.
WEBHOOK_SECRET_LOGICAL_ID = "IacCiStorageWebhookSecret18B5DEC9"
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")  # no ':' (it separates the fields of `sub`), no '*'
QUALIFIER_RE = re.compile(r"^[a-z0-9]{1,10}$")
STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")


class DeployRoleError(ValueError):
    """Every problem with the deploy role's settings at once, each naming its setting."""


class DeployRoleStack(Stack):
    """GitHub's OIDC provider (or an existing one) and the deploy workflow's role.

    ``repository`` (``owner/name``) and ``environment`` decide who may assume the role;
    ``deployed_stack_name`` is the iac-ci stack the workflow deploys and smoke-tests;
    ``qualifier`` is the CDK bootstrap's; ``existing_oidc_provider_arn`` the account's GitHub
    provider (default: one is created; an account has at most one per URL)."""

    def __init__(self, scope: Construct, construct_id: str, *, repository: str, environment: str = "production",
                 deployed_stack_name: str = "IacCi", qualifier: str = DEFAULT_QUALIFIER,
                 existing_oidc_provider_arn: str | None = None, **kwargs: Any) -> None:
        problems = [
            *([] if REPO_RE.match(repository) else [f"repository: '{repository}' is not owner/name"]),
            *([] if ENVIRONMENT_RE.match(environment) else
              [f"environment: '{environment}' is not a GitHub environment name (letters, digits, . _ -)"]),
            *([] if STACK_NAME_RE.match(deployed_stack_name) else
              [f"deployed_stack_name: '{deployed_stack_name}' is not a CloudFormation stack name"]),
            *([] if QUALIFIER_RE.match(qualifier) else
              [f"qualifier: '{qualifier}' is not a CDK bootstrap qualifier (at most 10 of a-z 0-9)"]),
        ]
        if problems:
            raise DeployRoleError("; ".join(problems))
        super().__init__(scope, construct_id, **kwargs)
        provider: iam.IOidcProvider = (
            iam.OidcProviderNative.from_oidc_provider_arn(self, "GitHubOidc", existing_oidc_provider_arn)
            if existing_oidc_provider_arn else
            iam.OidcProviderNative(self, "GitHubOidc", url=GITHUB_OIDC_URL, client_ids=[STS_AUDIENCE]))
        self.role = iam.Role(
            self, "DeployRole",
            description=f"iac-ci deploy workflow of {repository} (GitHub environment {environment})",
            max_session_duration=Duration.hours(2),  # an image build under emulation, then the deploy
            assumed_by=iam.WebIdentityPrincipal(provider.oidc_provider_arn, conditions={
                "StringEquals": {
                    f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                    f"{GITHUB_OIDC_HOST}:sub": f"repo:{repository}:environment:{environment}",
                },
            }),
        )
        self._grant(deployed_stack_name, qualifier)
        CfnOutput(self, "RoleArn", value=self.role.role_arn,
                  description="The deploy workflow's IAC_CI_DEPLOY_ROLE_ARN").override_logical_id("RoleArn")

    def _grant(self, deployed_stack_name: str, qualifier: str) -> None:
        partition, account, region = self.partition, self.account, self.region
        bootstrap = f"cdk-{qualifier}"
        stack_arn = f"arn:{partition}:cloudformation:{region}:{account}:stack/{deployed_stack_name}/*"
        any_secret = f"arn:{partition}:secretsmanager:{region}:{account}:secret:*"
        statements = [
            iam.PolicyStatement(sid="AssumeCdkBootstrapRoles", actions=["sts:AssumeRole"], resources=[
                f"arn:{partition}:iam::{account}:role/{bootstrap}-{kind}-role-{account}-{region}"
                for kind in BOOTSTRAP_ROLES]),
            iam.PolicyStatement(sid="CheckTheBootstrap", actions=["ssm:GetParameter"], resources=[
                f"arn:{partition}:ssm:{region}:{account}:parameter/cdk-bootstrap/{qualifier}/version"]),
            iam.PolicyStatement(sid="CheckTheStagingBucket", actions=["s3:ListBucket"], resources=[
                f"arn:{partition}:s3:::{bootstrap}-assets-{account}-{region}"]),
            iam.PolicyStatement(sid="CheckTheImageRepository", actions=["ecr:DescribeRepositories"], resources=[
                f"arn:{partition}:ecr:{region}:{account}:repository/{bootstrap}-container-assets-{account}-{region}"]),
            iam.PolicyStatement(sid="ReadTheStack", resources=[stack_arn],
                actions=["cloudformation:DescribeStacks", "cloudformation:DescribeStackResources"]),
            iam.PolicyStatement(
                sid="ReadTheApiSigningSecret", actions=["secretsmanager:GetSecretValue"],
                resources=[any_secret],
                conditions={"StringEquals": {
                    "aws:ResourceTag/aws:cloudformation:stack-name": deployed_stack_name,
                    "aws:ResourceTag/aws:cloudformation:logical-id": WEBHOOK_SECRET_LOGICAL_ID,
                }}),
        ]
        policy = iam.ManagedPolicy(self, "DeployPolicy", statements=statements,
                                   description="What the iac-ci deploy workflow does with its own credentials")
        self.role.add_managed_policy(policy)

        def finding(arn: str) -> str:  # as cdk-nag names it: tokens as <AWS::Region>, known values as they are
            return "Resource::" + flatten_cfn_reference(self.resolve(arn))

        NagSuppressions.add_resource_suppressions(policy, [
            NagPackSuppression(
                id="AwsSolutions-IAM5", applies_to=[finding(stack_arn)],
                reason="A stack's ARN ends with the id CloudFormation generated for it: the wildcard stands for that "
                       "id only, the stack name is fixed"),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                applies_to=[finding(any_secret)],
                reason="The API signing secret's name is generated by CloudFormation; the statement's conditions "
                       "select it by the tags CloudFormation puts on it (stack name and logical id): one secret"),
        ])


def build(app: App) -> DeployRoleStack:
    repository = os.environ.get("IAC_CI_GITHUB_REPO", "")
    if not repository:
        raise SystemExit("IAC_CI_GITHUB_REPO is not set: the repository (owner/name) whose deploy workflow "
                         "assumes the role")
    stack = DeployRoleStack(
        app, "IacCiDeployRole",
        description="iac-ci: the OIDC role of iac-ci's own deploy workflow",
        env=Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
        repository=repository,
        environment=os.environ.get("IAC_CI_DEPLOY_ENVIRONMENT", "production"),
        deployed_stack_name=os.environ.get("IAC_CI_STACK_NAME", "IacCi"),
        qualifier=os.environ.get("IAC_CI_CDK_QUALIFIER", DEFAULT_QUALIFIER),
        existing_oidc_provider_arn=os.environ.get("IAC_CI_OIDC_PROVIDER_ARN") or None,
    )
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return stack


if __name__ == "__main__":
    app = App()
    build(app)
    app.synth()
