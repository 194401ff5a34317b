"""Mutual TLS's certificate authority in the stack (``Storage/Certificates``, ``Storage/TruststoreBucket``,
``Storage/CaKey``): created only when the API has mutual TLS (``api_domain_name``) or is being
prepared for it (``api_mtls_certificates``), so every other deployment keeps its resources as they
are. ``iac-ci certs --stack`` manages what is in them; the construct only makes the places.

- the certificates table (``schema.tables.CERTIFICATES``), which the intake function reads on every
  request (``GetItem`` only) and ``iac-ci certs`` writes;
- the truststore bucket (versioned: API Gateway is told each new version of the bundle), unless the
  owner brings one (``api_mtls_truststore_bucket``);
- a KMS key of its own for the CA keys, which live in SSM as SecureString parameters under
  ``/iac-ci-engine/<stack>/ca/``: outside every job prefix, and encrypted with a key no engine
  function may use.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from iac_ci_constructs import defaults
from iac_ci_constructs.props import IacCiPipelineProps
from lambda_runtime.schema import deployment
from lambda_runtime.schema.tables import CERTIFICATES

TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                 "dynamodb:ConditionCheckItem", "dynamodb:Scan")
SSM_ACTIONS = ("ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter")
KMS_ACTIONS = ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey")
TRUSTSTORE_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject")


def parameter_prefix(stack: Stack) -> str:
    """SSM names of the CA keys: ``/iac-ci-engine/<stack name>/ca/`` (``schema.deployment.CA_PARAMETER_ROOT``)."""
    return f"{deployment.CA_PARAMETER_ROOT}{stack.stack_name}/ca/"


@dataclass(frozen=True)
class Certificates:
    table: dynamodb.Table
    truststore_bucket: s3.IBucket
    truststore_key: str
    ca_key: kms.IKey
    parameter_prefix: str

    @property
    def truststore_uri(self) -> str:
        return f"s3://{self.truststore_bucket.bucket_name}/{self.truststore_key}"

    def parameters_arn(self) -> str:
        stack = Stack.of(self.table)
        return stack.format_arn(service="ssm", resource="parameter",
                                resource_name=self.parameter_prefix.strip("/") + "/*",
                                arn_format=ArnFormat.SLASH_RESOURCE_NAME)

    def grant_check(self, grantee: iam.IGrantable) -> iam.Grant:
        """What the intake function's revocation check needs (``intake.client_certs``): read items by key."""
        return iam.Grant.add_to_principal(grantee=grantee, actions=["dynamodb:GetItem"],
                                          resource_arns=[self.table.table_arn])

    def grant_manage(self, grantee: iam.IGrantable, *, domain_name: str | None) -> iam.Grant:
        """What ``iac-ci certs --stack`` does: the table's items, the CA keys (SSM + the KMS key), the
        truststore object and, with a domain, telling API Gateway its new version."""
        stack = Stack.of(self.table)
        grant = iam.Grant.add_to_principal(grantee=grantee, actions=list(TABLE_ACTIONS),
                                           resource_arns=[self.table.table_arn])
        for actions, arns in ((SSM_ACTIONS, [self.parameters_arn()]), (KMS_ACTIONS, [self.ca_key.key_arn]),
                              (TRUSTSTORE_ACTIONS, [self.truststore_bucket.arn_for_objects(self.truststore_key)]),
                              (("cloudformation:DescribeStacks",), [stack.stack_id])):
            grant = grant.combine(iam.Grant.add_to_principal(grantee=grantee, actions=list(actions),
                                                             resource_arns=arns))
        if domain_name is not None:
            domain_arn = f"arn:{stack.partition}:apigateway:{stack.region}::/domainnames/{domain_name}"
            grant = grant.combine(iam.Grant.add_to_principal(grantee=grantee, actions=["apigateway:GET",
                                                                                       "apigateway:PATCH"],
                                                             resource_arns=[domain_arn]))
        return grant


def mtls_enabled(props: IacCiPipelineProps) -> bool:
    return props.api_domain_name is not None or props.api_mtls_certificates is True


def build_certificates(group: Construct, props: IacCiPipelineProps, *,
                       access_logs: s3.IBucket) -> Certificates | None:
    """The CA's table, truststore bucket and key in ``group`` (``Storage``); None without mutual TLS."""
    if not mtls_enabled(props):
        return None
    removal = props.removal_policy
    table = defaults.table(group, CERTIFICATES, removal_policy=removal)
    bucket = props.api_mtls_truststore_bucket or defaults.bucket(
        group, "TruststoreBucket", removal_policy=removal, access_logs=access_logs)
    key = kms.Key(group, "CaKey", description="iac-ci: the mutual TLS CA keys (SSM SecureString, iac-ci certs)",
                  enable_key_rotation=True, removal_policy=removal)
    return Certificates(table=table, truststore_bucket=bucket, truststore_key=props.api_mtls_truststore_key,
                        ca_key=key, parameter_prefix=parameter_prefix(Stack.of(group)))
