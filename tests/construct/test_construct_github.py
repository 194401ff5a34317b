"""IacCiPipeline's GitHub settings: the webhook route, the secrets, who may read them."""
from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Match, Template

from iac_ci_constructs import IacCiPipeline, IacCiPipelinePropsError
from lambda_runtime.schema import deployment

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:{}-AbCdEf"


def secret(stack: Stack, name: str) -> secretsmanager.ISecret:
    return secretsmanager.Secret.from_secret_complete_arn(stack, name, ARN.format(name))


@pytest.fixture(scope="module")
def github() -> tuple[IacCiPipeline, Template]:
    stack = Stack(App(), "GitHub", env={"account": "123456789012", "region": "eu-west-1"})
    pipeline = IacCiPipeline(stack, "IacCi", github_webhook_secret=secret(stack, "gh-webhook"),
                             github_token_secret=secret(stack, "gh-token"),
                             github_api_url="https://ghe.example.com/api/v3")
    return pipeline, Template.from_stack(stack)


def env_of(template: Template, handler: str) -> dict[str, Any]:
    for fn in template.find_resources("AWS::Lambda::Function").values():
        if fn["Properties"].get("ImageConfig", {}).get("Command") == [handler]:
            return fn["Properties"]["Environment"]["Variables"]
    raise AssertionError(handler)


def test_functions_get_the_github_settings(github) -> None:
    _, template = github
    env = env_of(template, deployment.HANDLERS["intake"])
    assert env["IAC_CI_GITHUB_WEBHOOK_SECRET_ID"] == ARN.format("gh-webhook")
    assert env["IAC_CI_GITHUB_TOKEN_SECRET_ID"] == ARN.format("gh-token")
    assert env["IAC_CI_GITHUB_API_URL"] == "https://ghe.example.com/api/v3"
    orchestrator = env_of(template, deployment.HANDLERS["orchestrator"])
    assert orchestrator["IAC_CI_GITHUB_TOKEN_SECRET_ID"] == ARN.format("gh-token")


def test_only_intake_reads_the_webhook_secret_and_only_packaging_and_orchestrator_the_token(github) -> None:
    _, template = github
    readers: dict[str, set[str]] = {}
    for policy in template.find_resources("AWS::IAM::Policy").values():
        roles = {r["Ref"] for r in policy["Properties"]["Roles"]}
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "secretsmanager:GetSecretValue" in st["Action"] and isinstance(st["Resource"], str):
                for role in roles:
                    readers.setdefault(st["Resource"], set()).add(role)
    webhook = readers[ARN.format("gh-webhook")]
    token = readers[ARN.format("gh-token")]
    assert len(webhook) == 1 and len(token) == 2 and not webhook & token
    assert all("Intake" in r for r in webhook)
    assert any("Packaging" in r for r in token) and any("Orchestrator" in r for r in token)


def test_webhook_route_and_output(github) -> None:
    _, template = github
    template.has_resource_properties("AWS::ApiGateway::Resource", {"PathPart": "github"})
    outputs = template.find_outputs(deployment.OUTPUT_GITHUB_WEBHOOK_URL)
    assert outputs, "the webhook payload URL is an output"


def test_without_github_the_route_answers_404_and_no_output() -> None:
    stack = Stack(App(), "Plain")
    IacCiPipeline(stack, "IacCi")
    template = Template.from_stack(stack)
    assert not template.find_outputs(deployment.OUTPUT_GITHUB_WEBHOOK_URL)
    env = env_of(template, deployment.HANDLERS["intake"])
    assert env["IAC_CI_GITHUB_WEBHOOK_SECRET_ID"] == ""
    template.has_resource_properties("AWS::Lambda::Function", {"Environment": {"Variables": Match.object_like(
        {"IAC_CI_GITHUB_TOKEN_SECRET_ID": ""})}})


def problems(**props: Any) -> list[str]:
    stack = Stack(App(), "S")
    kwargs = {k: secret(stack, k) if v == "secret" else v for k, v in props.items()}
    with pytest.raises(IacCiPipelinePropsError) as err:
        IacCiPipeline(stack, "IacCi", **kwargs)
    return list(err.value.problems)


def test_token_and_app_are_mutually_exclusive() -> None:
    assert "github_token_secret and github_app_secret are mutually exclusive: give one" in problems(
        github_webhook_secret="secret", github_token_secret="secret", github_app_secret="secret")


def test_webhook_without_credentials_and_plain_http_api() -> None:
    found = problems(github_webhook_secret="secret", github_api_url="http://ghe.local")
    assert any("needs github_token_secret or github_app_secret" in p for p in found)
    assert "github_api_url must be an https:// URL, got 'http://ghe.local'" in found
