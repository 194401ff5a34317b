"""Mutual TLS in the construct: the custom domain (execute-api disabled), the certificate authority's
table, truststore bucket and key, the intake's revocation check, the outputs ``iac-ci certs --stack``
reads, ``grant_manage_certificates``; every invalid combination of the props; cdk-nag and cfn-lint.

Two stacks, synthesized once: ``Mtls`` (a domain, so everything) and ``Prepared``
(``api_mtls_certificates=True``: the CA's resources before the domain, as the README's first deploy).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Aspects, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint

from iac_ci_constructs import IacCiPipeline, IacCiPipelineProps, IacCiPipelinePropsError
from lambda_runtime.schema import deployment

pytestmark = pytest.mark.slow  # two synths with every AwsSolutions rule, then cfn-lint

DOMAIN = "ci.example.com"
CERT_ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
ENV = {"account": "123456789012", "region": "eu-west-1"}


@pytest.fixture(scope="module")
def app() -> dict[str, Any]:
    app = App()
    Aspects.of(app).add(AwsSolutionsChecks())
    mtls = Stack(app, "Mtls", env=ENV)
    pipeline = IacCiPipeline(mtls, "IacCi", api_domain_name=DOMAIN,
                             api_domain_certificate=acm.Certificate.from_certificate_arn(mtls, "Cert", CERT_ARN))
    operator = iam.Role(mtls, "Operator", assumed_by=iam.AccountRootPrincipal())
    pipeline.grant_manage_certificates(operator)
    prepared = Stack(app, "Prepared", env=ENV)
    early = IacCiPipeline(prepared, "IacCi", api_mtls_certificates=True)
    return {"mtls": (mtls, pipeline, Template.from_stack(mtls)), "prepared": (prepared, early,
                                                                              Template.from_stack(prepared))}


def resources(template: Template, typ: str) -> dict[str, dict[str, Any]]:
    return template.find_resources(typ)


def ref(stack: Stack, construct: Any) -> dict[str, str]:
    return {"Ref": stack.resolve(construct.node.default_child.logical_id)}


def intake_of(stack: Stack, pipeline: IacCiPipeline, template: Template) -> dict[str, Any]:
    lid = stack.resolve(pipeline.intake_function.node.default_child.logical_id)
    return template.to_json()["Resources"][lid]["Properties"]


def policy_statements(template: Template, role_logical_prefix: str) -> list[dict[str, Any]]:
    out = []
    for lid, policy in resources(template, "AWS::IAM::Policy").items():
        if lid.startswith(role_logical_prefix):
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return out


# ---- the domain ------------------------------------------------------------------------------------------------
def test_the_api_is_served_on_its_custom_domain_only_with_mutual_tls(app) -> None:
    stack, pipeline, template = app["mtls"]
    template.has_resource_properties("AWS::ApiGateway::RestApi", {"DisableExecuteApiEndpoint": True})
    [domain] = resources(template, "AWS::ApiGateway::DomainName").values()
    props = domain["Properties"]
    assert props["DomainName"] == DOMAIN and props["RegionalCertificateArn"] == CERT_ARN
    assert props["EndpointConfiguration"] == {"Types": ["REGIONAL"]} and props["SecurityPolicy"] == "TLS_1_2"
    bucket = ref(stack, pipeline.truststore_bucket)
    assert props["MutualTlsAuthentication"] == {"TruststoreUri": {"Fn::Join": ["", ["s3://", bucket,
                                                                                    "/truststore.pem"]]}}
    [mapping] = resources(template, "AWS::ApiGateway::BasePathMapping").values()
    assert "BasePath" not in mapping["Properties"]  # the stage at the root: routes and signed paths unchanged


def test_outputs_name_the_domain_and_what_iac_ci_certs_manages(app) -> None:
    stack, pipeline, template = app["mtls"]
    outputs = template.to_json()["Outputs"]
    domain = ref(stack, pipeline.api_domain)
    assert outputs[deployment.OUTPUT_API_URL]["Value"] == {"Fn::Join": ["", ["https://", domain, "/"]]}
    assert outputs[deployment.OUTPUT_API_DOMAIN_NAME]["Value"] == domain
    assert outputs[deployment.OUTPUT_API_DOMAIN_TARGET]["Value"]["Fn::GetAtt"][1] == "RegionalDomainName"
    assert outputs[deployment.OUTPUT_CERTIFICATES_TABLE]["Value"] == ref(stack, pipeline.certificates_table)
    assert outputs[deployment.OUTPUT_CA_PARAMETER_PREFIX]["Value"] == "/iac-ci-engine/Mtls/ca/"
    assert outputs[deployment.OUTPUT_CA_KEY_ARN]["Value"]["Fn::GetAtt"][1] == "Arn"
    uri = outputs[deployment.OUTPUT_TRUSTSTORE_URI]["Value"]["Fn::Join"][1]
    assert uri == ["s3://", ref(stack, pipeline.truststore_bucket), "/truststore.pem"]


def test_every_function_links_to_the_custom_domain(app) -> None:
    stack, pipeline, template = app["mtls"]
    env = intake_of(stack, pipeline, template)["Environment"]["Variables"]
    assert env["IAC_CI_API_URL"] == {"Fn::Join": ["", ["https://", ref(stack, pipeline.api_domain)]]}


# ---- the certificate authority's resources ------------------------------------------------------------------------
def test_the_certificates_table_bucket_and_key_have_the_secure_defaults(app) -> None:
    stack, pipeline, template = app["mtls"]
    table = template.to_json()["Resources"][stack.resolve(pipeline.certificates_table.node.default_child.logical_id)]
    assert table["Properties"]["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Retain"
    bucket = template.to_json()["Resources"][stack.resolve(pipeline.truststore_bucket.node.default_child.logical_id)]
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}  # API Gateway is told versions
    assert bucket["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    key = template.to_json()["Resources"][stack.resolve(pipeline.ca_key.node.default_child.logical_id)]
    assert key["Properties"]["EnableKeyRotation"] is True and key["DeletionPolicy"] == "Retain"


def test_intake_checks_each_certificate_and_may_only_read_the_table_by_key(app) -> None:
    stack, pipeline, template = app["mtls"]
    env = intake_of(stack, pipeline, template)["Environment"]["Variables"]
    table = ref(stack, pipeline.certificates_table)
    assert env[deployment.ENV_CLIENT_CERTS_TABLE] == table
    table_arn = {"Fn::GetAtt": [table["Ref"], "Arn"]}
    on_table = [s for s in template.to_json()["Resources"].values() if s["Type"] == "AWS::IAM::Policy"
                for s in s["Properties"]["PolicyDocument"]["Statement"] if table_arn in _list(s["Resource"])]
    intake_policy = stack.resolve(pipeline.intake_function.role.node.find_child("DefaultPolicy")
                                  .node.default_child.logical_id)
    by_policy = {lid: [s for s in p["Properties"]["PolicyDocument"]["Statement"] if table_arn in _list(s["Resource"])]
                 for lid, p in resources(template, "AWS::IAM::Policy").items()}
    assert [s["Action"] for s in by_policy[intake_policy]] == ["dynamodb:GetItem"]
    engine = {lid for lid, found in by_policy.items() if found} - {intake_policy}
    assert all(lid.startswith("Operator") for lid in engine), engine  # no engine function may write it
    assert on_table  # and the operator's grant covers it


def test_no_engine_function_may_use_the_ca_key_or_read_the_ca_parameters(app) -> None:
    stack, pipeline, template = app["mtls"]
    key_arn = {"Fn::GetAtt": [stack.resolve(pipeline.ca_key.node.default_child.logical_id), "Arn"]}
    for lid, policy in resources(template, "AWS::IAM::Policy").items():
        text = json.dumps(policy)
        if lid.startswith("Operator"):
            continue
        assert json.dumps(key_arn) not in text and "iac-ci-engine/Mtls/ca" not in text, lid


def test_grant_manage_certificates(app) -> None:
    stack, pipeline, template = app["mtls"]
    statements = {json.dumps(sorted(_list(s["Action"]))): s["Resource"]
                  for s in policy_statements(template, "Operator")}
    table = {"Fn::GetAtt": [ref(stack, pipeline.certificates_table)["Ref"], "Arn"]}
    assert statements[json.dumps(sorted(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                         "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:Scan"]))] \
        == table
    parameters = ":ssm:eu-west-1:123456789012:parameter/iac-ci-engine/Mtls/ca/*"
    assert statements[json.dumps(["ssm:DeleteParameter", "ssm:GetParameter", "ssm:PutParameter"])] == {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, parameters]]}
    assert statements[json.dumps(["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"])] == {
        "Fn::GetAtt": [stack.resolve(pipeline.ca_key.node.default_child.logical_id), "Arn"]}
    objects = statements[json.dumps(["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"])]
    assert objects["Fn::Join"][1][-1] == "/truststore.pem"
    assert statements[json.dumps(["apigateway:GET", "apigateway:PATCH"])] == {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":apigateway:eu-west-1::/domainnames/{DOMAIN}"]]}
    assert json.dumps(["cloudformation:DescribeStacks"]) in statements


def test_prepared_for_mutual_tls_the_ca_exists_and_the_api_is_unchanged(app) -> None:
    stack, pipeline, template = app["prepared"]
    template.resource_count_is("AWS::ApiGateway::DomainName", 0)
    assert "DisableExecuteApiEndpoint" not in next(iter(resources(template, "AWS::ApiGateway::RestApi").values()))[
        "Properties"]
    assert pipeline.certificates_table is not None and pipeline.ca_key is not None
    outputs = template.to_json()["Outputs"]
    assert deployment.OUTPUT_CERTIFICATES_TABLE in outputs and deployment.OUTPUT_API_DOMAIN_NAME not in outputs
    assert ".execute-api." in json.dumps(outputs[deployment.OUTPUT_API_URL])
    env = intake_of(stack, pipeline, template)["Environment"]["Variables"]
    assert deployment.ENV_CLIENT_CERTS_TABLE not in env  # no domain yet: nothing to check, nobody refused


def test_without_mutual_tls_nothing_is_created_and_nothing_can_be_granted() -> None:
    stack = Stack(App(), "Plain")
    pipeline = IacCiPipeline(stack, "IacCi")
    assert (pipeline.certificates_table, pipeline.truststore_bucket, pipeline.ca_key, pipeline.api_domain) == (
        None, None, None, None)
    with pytest.raises(IacCiPipelinePropsError, match="grant_manage_certificates needs mutual TLS"):
        pipeline.grant_manage_certificates(iam.Role(stack, "R", assumed_by=iam.AccountRootPrincipal()))


def test_an_existing_truststore_bucket_and_key_are_used() -> None:
    stack = Stack(App(), "Byo", env=ENV)
    IacCiPipeline(stack, "IacCi", api_domain_name=DOMAIN,
                  api_domain_certificate=acm.Certificate.from_certificate_arn(stack, "Cert", CERT_ARN),
                  api_mtls_truststore_bucket=s3.Bucket.from_bucket_name(stack, "Trust", "org-truststores"),
                  api_mtls_truststore_key="iac-ci/ci.pem")
    template = Template.from_stack(stack)
    template.has_resource_properties("AWS::ApiGateway::DomainName", {
        "MutualTlsAuthentication": {"TruststoreUri": "s3://org-truststores/iac-ci/ci.pem"}})
    assert not [lid for lid in resources(template, "AWS::S3::Bucket") if "Truststore" in lid]


# ---- invalid props ---------------------------------------------------------------------------------------------------
def problems(**props: Any) -> list[str]:
    stack = Stack(App(), "S")
    with pytest.raises(IacCiPipelinePropsError) as err:
        IacCiPipeline(stack, "IacCi", **props)
    return list(err.value.problems)


def test_a_domain_without_a_certificate_is_one_problem_naming_both() -> None:
    assert problems(api_domain_name=DOMAIN) == [
        f"api_domain_name '{DOMAIN}' needs api_domain_certificate (an ACM certificate for it, in the stack's region)"]


@pytest.mark.parametrize(("props", "message"), [
    ({"api_domain_name": "CI_Example"}, "api_domain_name 'CI_Example' is not a domain name"),
    ({"api_domain_certificate": "arn"}, "api_domain_certificate is set but api_domain_name is not"),
    ({"api_mtls_truststore_key": "/truststore.pem", "api_mtls_certificates": True},
     "api_mtls_truststore_key must be an S3 object key"),
    ({"api_mtls_certificates": "yes"}, "api_mtls_certificates must be True or False, got 'yes'"),
    ({"api_mtls_truststore_bucket": "my-bucket", "api_mtls_certificates": True},
     "api_mtls_truststore_bucket must be a bucket (s3.IBucket)"),
    ({"api_mtls_certificates": True, "allowed_ssm_prefixes": ["/iac-ci-engine/"]},
     "allowed_ssm_prefixes: '/iac-ci-engine/' would let jobs read the mutual TLS CA keys"),
])
def test_invalid_mtls_props(props: dict[str, Any], message: str) -> None:
    found = [p for p in IacCiPipelineProps(**props).problems() if p.startswith(message)]
    assert found, IacCiPipelineProps(**props).problems()


def test_a_truststore_bucket_without_mutual_tls_and_github_webhooks_with_it() -> None:
    stack = Stack(App(), "S")
    bucket = s3.Bucket.from_bucket_name(stack, "B", "org-truststores")
    assert IacCiPipelineProps(api_mtls_truststore_bucket=bucket).problems() == [
        "api_mtls_truststore_bucket is set but mutual TLS is not: give api_domain_name (or api_mtls_certificates=True "
        "to prepare it)"]
    from aws_cdk import aws_secretsmanager as secretsmanager

    secret = secretsmanager.Secret.from_secret_name_v2(stack, "W", "w")
    cert = acm.Certificate.from_certificate_arn(stack, "C", CERT_ARN)
    assert IacCiPipelineProps(api_domain_name=DOMAIN, api_domain_certificate=cert, github_webhook_secret=secret,
                              github_token_secret=secret).problems() == [
        "api_domain_name and github_webhook_secret exclude each other: with mutual TLS every caller presents a "
        "client certificate, which GitHub's webhook deliveries cannot"]


def test_every_mtls_problem_at_once() -> None:
    found = problems(api_domain_name="Not A Domain", api_mtls_truststore_key="", bogus_tls=1)
    assert [p.split(" ")[0] for p in found] == ["unknown", "api_domain_name", "api_domain_name",
                                               "api_mtls_truststore_key"]


# ---- cdk-nag and cfn-lint --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mtls", "prepared"])
def test_no_unsuppressed_aws_solutions_findings(app, name: str) -> None:
    stack = app[name][0]
    found = [f"{m.id}: {m.entry.data}" for finder in ("find_error", "find_warning")
             for m in getattr(Annotations.from_stack(stack), finder)("*", Match.string_like_regexp("AwsSolutions-.*"))]
    # the operator's role is the consumer's: its one wildcard is the CA keys' SSM names (they hold serials)
    assert [f for f in found if not f.startswith("/Mtls/Operator/")] == []
    assert all("parameter/iac-ci-engine/Mtls/ca/*" in f for f in found if f.startswith("/Mtls/Operator/"))


@pytest.mark.parametrize("name", ["mtls", "prepared"])
def test_cfn_lint_reports_no_errors(app, name: str) -> None:
    template = json.dumps(app[name][2].to_json())
    matches = lint(template, config=ManualArgs(regions=["eu-west-1"]))
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.severity == "error"] == []


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
