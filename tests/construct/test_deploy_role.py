"""The deploy workflow's OIDC role (sample_app/deploy_role.py): synthesized as `cdk deploy` would, nag-clean,
trusted by one repository's environment only, allowed exactly the workflow's steps. (cfn-lint checks its
template in ci.yml's synth job.)"""
from __future__ import annotations

import json
import os
import runpy
from collections.abc import Iterator
from typing import Any

import pytest
from aws_cdk import App, Aspects, Environment
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks
from support.paths import REPO_ROOT

DEPLOY_ROLE = REPO_ROOT / "sample_app" / "deploy_role.py"
MODULE = runpy.run_path(str(DEPLOY_ROLE))
REPO = "acme/iac-ci"


@pytest.fixture(scope="module")
def synthesized() -> Iterator[tuple[Any, dict[str, Any]]]:
    saved = os.environ.get("IAC_CI_GITHUB_REPO")
    os.environ["IAC_CI_GITHUB_REPO"] = REPO
    try:
        stack = MODULE["build"](App())  # adds AwsSolutionsChecks, as `cdk deploy --app ...deploy_role.py` does
        yield stack, Template.from_stack(stack).to_json()
    finally:
        if saved is None:
            os.environ.pop("IAC_CI_GITHUB_REPO", None)
        else:
            os.environ["IAC_CI_GITHUB_REPO"] = saved


def resources(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in template["Resources"].values() if r["Type"] == kind]


def test_nag_is_clean(synthesized) -> None:
    stack, _ = synthesized
    findings = Annotations.from_stack(stack)
    assert [e.id for e in findings.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))] == []
    assert [w.id for w in findings.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))] == []


def test_nag_is_clean_in_a_known_account_and_region_too() -> None:
    """`cdk synth` from a shell with AWS config knows the region: the findings then name it, not a token."""
    app = App()
    stack = MODULE["DeployRoleStack"](app, "Role", repository=REPO,
                                      env=Environment(account="123456789012", region="eu-west-1"))
    Aspects.of(app).add(AwsSolutionsChecks())
    Template.from_stack(stack)
    assert [e.id for e in Annotations.from_stack(stack).find_error("*", Match.string_like_regexp("AwsSolutions-.*"))] \
        == []


def test_only_this_repositorys_environment_may_assume_it(synthesized) -> None:
    _, template = synthesized
    (provider,) = resources(template, "AWS::IAM::OIDCProvider")
    assert provider["Properties"] == {"Url": "https://token.actions.githubusercontent.com",
                                      "ClientIdList": ["sts.amazonaws.com"]}
    (role,) = resources(template, "AWS::IAM::Role")
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert set(trust["Principal"]) == {"Federated"}
    assert trust["Condition"] == {"StringEquals": {  # exact values: no StringLike, no wildcard
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": f"repo:{REPO}:environment:production"}}


def test_it_may_do_the_workflows_steps_and_nothing_else(synthesized) -> None:
    _, template = synthesized
    (policy,) = resources(template, "AWS::IAM::ManagedPolicy")
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert {sid: s["Action"] for sid, s in statements.items()} == {
        "AssumeCdkBootstrapRoles": "sts:AssumeRole",
        "CheckTheBootstrap": "ssm:GetParameter",
        "CheckTheStagingBucket": "s3:ListBucket",
        "CheckTheImageRepository": "ecr:DescribeRepositories",
        "ReadTheStack": ["cloudformation:DescribeStacks", "cloudformation:DescribeStackResources"],
        "ReadTheApiSigningSecret": "secretsmanager:GetSecretValue",
    }
    assert all(s["Effect"] == "Allow" for s in statements.values())
    roles = [json.dumps(r) for r in statements["AssumeCdkBootstrapRoles"]["Resource"]]
    assert [next(k for k in MODULE["BOOTSTRAP_ROLES"] if f"cdk-hnb659fds-{k}-role-" in r) for r in roles] == [
        "deploy", "file-publishing", "image-publishing", "lookup"]
    assert statements["ReadTheApiSigningSecret"]["Condition"] == {"StringEquals": {
        "aws:ResourceTag/aws:cloudformation:stack-name": "IacCi",
        "aws:ResourceTag/aws:cloudformation:logical-id": MODULE["WEBHOOK_SECRET_LOGICAL_ID"]}}
    assert "RoleArn" in template["Outputs"]


def test_an_existing_provider_is_used_instead_of_a_new_one() -> None:
    arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    stack = MODULE["DeployRoleStack"](App(), "Role", repository=REPO, existing_oidc_provider_arn=arn)
    template = Template.from_stack(stack).to_json()
    assert resources(template, "AWS::IAM::OIDCProvider") == []
    (role,) = resources(template, "AWS::IAM::Role")
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Federated": arn}


def test_bad_settings_are_one_error_naming_each() -> None:
    with pytest.raises(MODULE["DeployRoleError"]) as caught:
        MODULE["DeployRoleStack"](App(), "Role", repository="acme", environment="prod:*", qualifier="Not-Valid")
    message = str(caught.value)
    assert "repository: 'acme' is not owner/name" in message
    assert "environment: 'prod:*'" in message and "qualifier: 'Not-Valid'" in message
    saved = os.environ.pop("IAC_CI_GITHUB_REPO", None)
    try:
        with pytest.raises(SystemExit, match="IAC_CI_GITHUB_REPO is not set"):
            MODULE["build"](App())
    finally:
        if saved is not None:
            os.environ["IAC_CI_GITHUB_REPO"] = saved
