"""The watchdog as deployed: its definition taken from the synthesized template, run in moto.

``test_watchdog.py`` runs the runtime's definition file; this runs what CloudFormation would
receive (after CDK's tokens and any substitutions are resolved), so a construct that mangles,
wraps or substitutes the definition is caught.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from iac_ci_constructs import IacCiPipeline
from lambda_runtime import watchdog
from lambda_runtime.schema import layout

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"


@pytest.fixture(scope="module")
def deployed_definition() -> str:
    app = App()
    stack = Stack(app, "Watchdog")
    pipeline = IacCiPipeline(stack, "IacCi")
    template = Template.from_stack(stack).to_json()
    resource = template["Resources"][stack.resolve(pipeline.watchdog.node.default_child.logical_id)]
    return resolve(resource["Properties"]["DefinitionString"], template)


def resolve(value: Any, template: dict[str, Any]) -> str:
    """A DefinitionString as CloudFormation would render it: literal, or Fn::Join/Fn::Sub of
    pseudo parameters (with the template's resources standing in as their logical ids)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(resolve(p, template) for p in parts)
    if "Ref" in value:
        return {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
                "AWS::URLSuffix": "amazonaws.com"}.get(value["Ref"], value["Ref"])
    if "Fn::Sub" in value:
        text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
        for name, real in (("AWS::AccountId", ACCOUNT), ("AWS::Region", REGION), ("AWS::Partition", PARTITION)):
            text = text.replace("${" + name + "}", real)
        return text
    raise AssertionError(f"cannot resolve {value!r}")


def test_template_carries_the_runtime_definition(deployed_definition: str) -> None:
    assert json.loads(deployed_definition) == watchdog.definition()


@pytest.fixture()
def machine(deployed_definition: str, clients) -> str:
    return clients.sfn.create_state_machine(
        name="deployed-watchdog-" + secrets.token_hex(4), definition=deployed_definition, type="STANDARD",
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/watchdog",
    )["stateMachineArn"]


def run(clients, machine: str, settings, run_id: str, key: str) -> dict[str, Any]:
    arn = watchdog.start(clients.sfn, machine, run_id=run_id, subject="deploy", deadline=time.time() + 1,
                         bucket=settings.internal_bucket, key=key, body='{"status": "timed_out"}')
    deadline = time.monotonic() + 30
    while True:
        execution = clients.sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING" or time.monotonic() > deadline:
            return execution
        time.sleep(0.2)


def read(clients, bucket: str, key: str) -> bytes | None:
    try:
        return clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except clients.s3.exceptions.NoSuchKey:
        return None


def test_writes_timed_out_for_an_order_without_result(stack, clients, machine: str) -> None:
    settings, _ = stack
    key = layout.result_key("run-a", "deploy")
    assert run(clients, machine, settings, "run-a", key)["status"] == "SUCCEEDED"
    assert json.loads(read(clients, settings.internal_bucket, key)) == {"status": "timed_out"}


def test_does_not_overwrite_an_existing_result(stack, clients, machine: str) -> None:
    settings, _ = stack
    key = layout.result_key("run-b", "deploy")
    clients.s3.put_object(Bucket=settings.internal_bucket, Key=key, Body=b'{"status": "succeeded"}')
    assert run(clients, machine, settings, "run-b", key)["status"] == "SUCCEEDED"
    assert json.loads(read(clients, settings.internal_bucket, key)) == {"status": "succeeded"}
    # and, as its notification may have been lost, it wakes the orchestrator with an object of its own
    control = clients.s3.list_objects_v2(Bucket=settings.internal_bucket,
                                         Prefix=layout.control_key("run-b", ""))
    assert [o["Key"].rsplit("/", 1)[1].startswith("wake-") for o in control.get("Contents", [])] == [True]
