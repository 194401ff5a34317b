"""cdk-nag (AwsSolutions) and cfn-lint on synthesized pipelines: clean out of the box.

Two configurations in one app: the sample app's stack (``sample_app/app.py``, what ``make synth``
deploys: the defaults, with AwsSolutionsChecks on the app), and one with every optional feature
that adds resources or permissions (VPC workers, allow-lists, existing key/secret, alarm topic, owner
schedules, worker images, an event bus with rules on it).
"""

from __future__ import annotations

import json
import runpy

import pytest
from aws_cdk import App, Aspects, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint
from support.paths import REPO_ROOT

from iac_ci_constructs import IacCiPipeline
from lambda_runtime.pipelines.schedules import ScheduledJob
from lambda_runtime.schema.images import WorkerImage

pytestmark = pytest.mark.slow  # two full synths with every AwsSolutions rule, then cfn-lint

SAMPLE_APP = REPO_ROOT / "sample_app" / "app.py"


@pytest.fixture(scope="module")
def stacks() -> dict[str, Stack]:
    app = App()
    default = runpy.run_path(str(SAMPLE_APP))["build"](app)  # adds AwsSolutionsChecks to the app
    assert isinstance(default.node.find_child("IacCi"), IacCiPipeline)
    full = Stack(app, "Full")
    alarms = sns.Topic(full, "Alarms", enforce_ssl=True, master_key=kms.Alias.from_alias_name(
        full, "SnsKey", "alias/aws/sns"))
    pipeline = IacCiPipeline(
        full, "IacCi",
        vpc=ec2.Vpc(full, "Vpc", max_azs=2, nat_gateways=1, flow_logs={"All": ec2.FlowLogOptions()}),
        allowed_role_arns=["arn:aws:iam::123456789012:role/deploy-*"],
        allowed_source_buckets=[s3.Bucket.from_bucket_name(full, "Sources", "iac-ci-sources")],
        existing_kms_key=kms.Key.from_key_arn(full, "Key", "arn:aws:kms:us-east-1:123456789012:key/1234abcd"),
        existing_webhook_secret=secretsmanager.Secret.from_secret_name_v2(full, "Secret", "ci/hmac"),
        alarm_topic=alarms,
        schedules=[ScheduledJob("org/app", "nightly", "0 6 * * 1-5")],
        images={"tools": WorkerImage(uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/tools:*", privileged=True),
                "terraform": WorkerImage(uri="hashicorp/terraform:1.9")},
        event_bus=events.EventBus(full, "Bus"),
    )
    pipeline.on_run_finished(targets.SnsTopic(alarms), statuses=["failed"])
    pipeline.on_order_state_change(targets.SnsTopic(alarms))
    pipeline.on_drift_detected(targets.SnsTopic(alarms))
    for stack in (default, full):
        Template.from_stack(stack)  # synthesize (runs the aspects)
    return {"default": default, "full": full}


@pytest.mark.parametrize("name", ["default", "full"])
def test_no_unsuppressed_aws_solutions_errors(stacks, name: str) -> None:
    errors = Annotations.from_stack(stacks[name]).find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert [f"{e.id}: {e.entry.data}" for e in errors] == []


@pytest.mark.parametrize("name", ["default", "full"])
def test_no_unsuppressed_aws_solutions_warnings(stacks, name: str) -> None:
    warnings = Annotations.from_stack(stacks[name]).find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert [f"{w.id}: {w.entry.data}" for w in warnings] == []


def test_every_wildcard_suppression_names_its_findings(stacks) -> None:
    """No blanket IAM5 suppression: each lists the exact resources it covers, with a reason."""
    template = Template.from_stack(stacks["full"]).to_json()
    seen = 0
    for resource in template["Resources"].values():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            assert len(rule["reason"]) >= 40, rule
            if rule["id"] == "AwsSolutions-IAM5":
                seen += 1
                assert rule.get("applies_to"), rule
    assert seen >= 6


def test_a_wildcard_added_later_is_still_reported() -> None:
    app = App()
    stack = Stack(app, "Late")
    pipeline = IacCiPipeline(stack, "IacCi")
    pipeline.orchestrator_function.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"]))
    Aspects.of(app).add(AwsSolutionsChecks())
    Template.from_stack(stack)
    errors = Annotations.from_stack(stack).find_error("*", Match.string_like_regexp("AwsSolutions-IAM5.*"))
    assert [e.id for e in errors] == ["/Late/IacCi/Orchestrator/Role/DefaultPolicy/Resource"]


@pytest.mark.parametrize("name", ["default", "full"])
def test_cfn_lint_reports_no_errors(stacks, name: str) -> None:
    template = json.dumps(Template.from_stack(stacks[name]).to_json())
    matches = lint(template, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches if m.rule.severity == "error"]
    assert errors == []
