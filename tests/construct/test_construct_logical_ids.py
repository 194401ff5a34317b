"""The CloudFormation logical ids of IacCiPipeline are API: a changed id replaces the resource.

CDK derives a logical id from the construct path, so regrouping the construct's children (or
renaming one) would make CloudFormation delete and re-create the resource: tables and buckets
(with their data), the KMS key, the secret. ``fixtures/construct/logical_ids.json`` records
every logical id and resource type of four configurations covering the optional resources
(defaults with an added route and a grant, GitHub, VPC workers with allow-lists, existing
key/secret/log bucket with an alarm topic); the synthesized stacks must match it exactly.

A deliberate change (a new resource, a new table) updates the fixture:

    IAC_CI_UPDATE_FIXTURES=1 .venv/bin/pytest tests/construct/test_construct_logical_ids.py
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from aws_cdk import App, CfnElement, CfnResource, Names, RemovalPolicy, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Annotations, Match, Template
from constructs import Construct
from support.paths import FIXTURES

from iac_ci_constructs import IacCiPipeline
from iac_ci_constructs.logical_ids import logical_id_components, make_unique_id, unique_id_components

FIXTURE = FIXTURES / "construct" / "logical_ids.json"
UPDATE = os.environ.get("IAC_CI_UPDATE_FIXTURES") == "1"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:{}-AbCdEf"
# An API deployment's logical id ends with a hash of the API's whole definition, so that every
# change to the API gets a new deployment: that part is by design, not a function of the path.
DEPLOYMENT_HASH = re.compile(r"[0-9a-f]{32}$")


def default(stack: Stack) -> None:
    pipeline = IacCiPipeline(stack, "IacCi")
    pipeline.add_route("POST", "/webhooks/example")  # children added after construction
    pipeline.grant_submit(iam.Role(stack, "Submitter", assumed_by=iam.AccountRootPrincipal()))


def github(stack: Stack) -> None:
    def secret(name: str) -> secretsmanager.ISecret:
        return secretsmanager.Secret.from_secret_complete_arn(stack, name, SECRET_ARN.format(name))

    IacCiPipeline(stack, "IacCi", github_webhook_secret=secret("gh-webhook"), github_token_secret=secret("gh-token"),
                  github_api_url="https://ghe.example.com/api/v3")


def vpc(stack: Stack) -> None:
    IacCiPipeline(
        stack, "IacCi",
        vpc=ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1),
        allowed_role_arns=["arn:aws:iam::123456789012:role/deploy-*"],
        allowed_source_buckets=[s3.Bucket.from_bucket_name(stack, "Sources", "iac-ci-sources")],
        allowed_ssm_prefixes=["/iac-ci/", "/shared/terraform/"],
    )


def existing(stack: Stack) -> None:
    IacCiPipeline(
        stack, "IacCi",
        architecture=lambda_.Architecture.X86_64,
        removal_policy=RemovalPolicy.DESTROY,
        log_retention=logs.RetentionDays.ONE_MONTH,
        codebuild_compute_type=codebuild.ComputeType.LARGE,
        existing_kms_key=kms.Key.from_key_arn(
            stack, "Key", "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"),
        existing_webhook_secret=secretsmanager.Secret.from_secret_complete_arn(
            stack, "Secret", SECRET_ARN.format("ci/hmac")),
        existing_access_logs_bucket=s3.Bucket.from_bucket_name(stack, "Logs", "org-access-logs"),
        alarm_topic=sns.Topic(stack, "Alarms"),
        api_cloud_watch_role=False,
    )


CONFIGURATIONS: dict[str, Callable[[Stack], None]] = {
    "Default": default, "GitHub": github, "Vpc": vpc, "Existing": existing}


def synthesize(name: str) -> tuple[Stack, dict[str, Any]]:
    env = {"account": "123456789012", "region": "eu-west-1"} if name == "GitHub" else None  # as the other tests
    stack = Stack(App(), name, env=env)
    CONFIGURATIONS[name](stack)
    return stack, Template.from_stack(stack).to_json()


def inventory(template: dict[str, Any]) -> dict[str, Any]:
    """Logical id -> resource type, and the output keys, of one configuration's template."""
    return {"resources": {lid: r["Type"] for lid, r in sorted(template["Resources"].items())},
            "outputs": sorted(template.get("Outputs", {}))}


def comparable(entry: dict[str, Any]) -> dict[str, Any]:
    resources = {
        DEPLOYMENT_HASH.sub("<hash>", lid) if typ == "AWS::ApiGateway::Deployment" else lid: typ
        for lid, typ in entry["resources"].items()
    }
    return {"resources": resources, "outputs": entry["outputs"]}


@pytest.fixture(scope="module")
def synthesized() -> dict[str, tuple[Stack, dict[str, Any]]]:
    return {name: synthesize(name) for name in CONFIGURATIONS}


@pytest.fixture(scope="module")
def recorded(synthesized) -> dict[str, Any]:
    if UPDATE:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        inventories = {name: inventory(template) for name, (_, template) in synthesized.items()}
        FIXTURE.write_text(json.dumps(inventories, indent=2, sort_keys=True) + "\n")
    return dict(json.loads(FIXTURE.read_text()))


def test_fixture_covers_every_configuration(recorded) -> None:
    assert set(recorded) == set(CONFIGURATIONS)


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_logical_ids_and_types_are_unchanged(synthesized, recorded, name: str) -> None:
    got, want = comparable(inventory(synthesized[name][1])), comparable(recorded[name])
    assert {k: v for k, v in got["resources"].items() if k not in want["resources"]} == {}, "new logical ids"
    assert {k: v for k, v in want["resources"].items() if k not in got["resources"]} == {}, "logical ids gone"
    assert got == want


def test_only_the_api_deployment_hash_is_masked(recorded) -> None:
    for entry in recorded.values():
        masked = [lid for lid in comparable(entry)["resources"] if lid.endswith("<hash>")]
        deployments = [lid for lid, typ in entry["resources"].items() if typ == "AWS::ApiGateway::Deployment"]
        assert len(masked) == len(deployments) == 1


def test_security_groups_keep_their_descriptions(synthesized) -> None:
    """CDK names a worker's security group after its owner's path; GroupDescription cannot change in place."""
    _, template = synthesized["Vpc"]
    descriptions = {r["Properties"]["GroupDescription"] for r in template["Resources"].values()
                    if r["Type"] == "AWS::EC2::SecurityGroup"}
    assert descriptions == {
        "Automatic security group for Lambda Function " + make_unique_id(["Vpc", "IacCi", "Worker", "Function"]),
        "Automatic generated security group for CodeBuild "
        + make_unique_id(["Vpc", "IacCi", "WorkerBuild", "Project"]),
    }


# ---- the port of CDK's makeUniqueId, and the namespace it keeps transparent ------------------------------
@pytest.mark.parametrize("components", [
    ["Bucket"],  # one component: as it is, no hash
    ["My-Bucket_1"],
    ["IacCi", "Default", "Resource"],  # Default dropped, even from the hash
    ["IacCi", "Storage", "Orders", "Resource"],
    ["Role", "Resource", "Role"],  # dupes are removed before Resource is
    ["Bucket", "Bucket", "Resource"],
    ["MyBucket", "Bucket"],  # a component the previous one ends with
    ["Bucket", "MyBucket"],
    ["A" * 300],  # too long for an id of its own: hashed
    ["Long" * 70, "Resource"],  # the readable part is cut at 240 characters
])
def test_make_unique_id_is_cdks(components: list[str]) -> None:
    stack = Stack(App(), "Ids")
    scope: Construct = stack
    for component in components[:-1]:
        scope = Construct(scope, component)
    element = CfnResource(scope, components[-1], type="Test::Resource")
    assert make_unique_id(components) == stack.get_logical_id(element)


@pytest.mark.parametrize(("components", "expected"), [
    (["IacCi", "Worker", "Function", "Resource"], "IacCiWorkerFunction0C23F603"),  # recorded in the fixture
    (["IacCi", "WorkerBuild", "Project", "Resource"], "IacCiWorkerBuildProject2AE587FE"),
    (["IacCi", "Worker", "Role", "DefaultPolicy", "Resource"], "IacCiWorkerRoleDefaultPolicyD8ED47C5"),
])
def test_make_unique_id_of_recorded_ids(recorded, components: list[str], expected: str) -> None:
    assert make_unique_id(components) == expected and expected in recorded["Default"]["resources"]


def test_make_unique_id_of_nothing() -> None:
    with pytest.raises(ValueError, match="empty set of components"):
        make_unique_id(["Default"])


def test_make_unique_id_agrees_with_cdk_on_every_path(synthesized) -> None:
    """Every element's allocated id and every construct's Names.uniqueId, computed by CDK and by the port."""
    checked = 0
    for stack, _ in synthesized.values():
        for construct in stack.node.find_all():
            if construct is stack:
                continue
            assert make_unique_id(unique_id_components(construct)) == Names.unique_id(construct)
            if isinstance(construct, CfnElement):
                assert make_unique_id(logical_id_components(construct)) == stack.get_logical_id(construct)
                checked += 1
    assert checked > 400


def test_children_added_later_get_their_legacy_ids() -> None:
    stack = Stack(App(), "Late")
    pipeline = IacCiPipeline(stack, "IacCi")
    pipeline.worker_function.add_permission("Invoke", principal=iam.AccountRootPrincipal())
    pipeline.worker_project.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=["*"]))
    resources = Template.from_stack(stack).to_json()["Resources"]
    assert resources[make_unique_id(["IacCi", "Worker", "Function", "Invoke"])]["Type"] == "AWS::Lambda::Permission"
    assert stack.resolve(pipeline.worker_function.node.default_child.logical_id) == "IacCiWorkerFunction0C23F603"
    assert not [lid for lid in resources if lid.startswith("IacCiWorkers")]


def test_an_id_overridden_by_the_user_is_kept() -> None:
    stack = Stack(App(), "Override")
    pipeline = IacCiPipeline(stack, "IacCi")
    pipeline.worker_project.node.default_child.override_logical_id("MyWorkerProject")
    resources = Template.from_stack(stack).to_json()["Resources"]
    assert resources["MyWorkerProject"]["Type"] == "AWS::CodeBuild::Project"


class PrefixedStack(Stack):
    def _allocate_logical_id(self, cfn_element: CfnElement) -> str:  # jsii: the protected allocateLogicalId
        return "Org" + super()._allocate_logical_id(cfn_element)


def test_a_stack_allocating_ids_its_own_way_keeps_them_and_is_warned() -> None:
    stack = PrefixedStack(App(), "Prefixed")
    pipeline = IacCiPipeline(stack, "IacCi")
    template = Template.from_stack(stack)
    lid = stack.resolve(pipeline.worker_function.node.default_child.logical_id)
    assert lid == "Org" + make_unique_id(["IacCi", "Workers", "Worker", "Function", "Resource"])
    assert lid in template.to_json()["Resources"]
    warnings = Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp(".*allocate logical ids.*"))
    assert [w.id for w in warnings] == ["/Prefixed/IacCi/Workers"]
