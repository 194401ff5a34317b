"""IacCiPipeline's log links and project locks: the secret, who reads it, the API URL in the
functions' environment (without a dependency cycle), the routes, and the intake's rights on the
locks table and the logs."""
from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from iac_ci_constructs import IacCiPipeline
from iac_ci_constructs.api import API_STAGE
from iac_ci_constructs.nag import flatten_cfn_reference
from lambda_runtime.schema import deployment, layout

RUN, ORDER = "0123456789abcdef", "plan"


@pytest.fixture(scope="module")
def built() -> tuple[Stack, IacCiPipeline, dict[str, Any]]:
    stack = Stack(App(), "Links")
    pipeline = IacCiPipeline(stack, "IacCi")
    return stack, pipeline, Template.from_stack(stack).to_json()["Resources"]


def lid(stack: Stack, construct: Any) -> str:
    return str(stack.resolve(construct.node.default_child.logical_id))


def env_of(resources: dict[str, Any], component: str) -> dict[str, Any]:
    for res in resources.values():
        if res["Type"] == "AWS::Lambda::Function" and \
                res["Properties"].get("ImageConfig", {}).get("Command") == [deployment.HANDLERS[component]]:
            return dict(res["Properties"]["Environment"]["Variables"])
    raise AssertionError(component)


def statements(stack: Stack, resources: dict[str, Any], role: Any) -> list[dict[str, Any]]:
    ref = {"Ref": stack.resolve(role.node.default_child.logical_id)}
    out = []
    for res in resources.values():
        if res["Type"] == "AWS::IAM::Policy" and ref in res["Properties"]["Roles"]:
            for s in res["Properties"]["PolicyDocument"]["Statement"]:
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                raw = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
                out.append({**s, "Action": actions, "Resource": [flatten_cfn_reference(r) for r in raw]})
    return out


def test_the_log_link_secret_is_its_own_generated_retained_secret(built) -> None:
    stack, pipeline, resources = built
    secret = resources[lid(stack, pipeline.log_link_secret)]
    assert secret["Type"] == "AWS::SecretsManager::Secret" and secret["DeletionPolicy"] == "Retain"
    assert secret["Properties"]["GenerateSecretString"] == {"ExcludePunctuation": True, "PasswordLength": 64}
    assert lid(stack, pipeline.log_link_secret) != lid(stack, pipeline.webhook_secret)


def test_functions_name_the_secret_and_the_api_url_without_a_cycle(built) -> None:
    stack, pipeline, resources = built
    rest_api = lid(stack, pipeline.api)
    for component in ("intake", "packaging", "orchestrator"):
        env = env_of(resources, component)
        assert env["IAC_CI_LOG_LINK_SECRET_ID"] == {"Ref": lid(stack, pipeline.log_link_secret)}
        url = flatten_cfn_reference(env["IAC_CI_API_URL"])
        assert url == f"https://<{rest_api}>.execute-api.<AWS::Region>.<AWS::URLSuffix>/{API_STAGE}"
        # the stage and the deployment depend on the methods, which depend on the intake function
        assert "Stage" not in json.dumps(env["IAC_CI_API_URL"]) and "Deployment" not in json.dumps(env)


def test_intake_packaging_and_orchestrator_read_the_log_link_secret_and_workers_do_not(built) -> None:
    stack, pipeline, resources = built
    ref = f"<{lid(stack, pipeline.log_link_secret)}>"

    def reads(role: Any) -> bool:
        return any("secretsmanager:GetSecretValue" in s["Action"] and ref in s["Resource"]
                   for s in statements(stack, resources, role))

    for fn in (pipeline.intake_function, pipeline.packaging_function, pipeline.orchestrator_function):
        assert reads(fn.role), fn.node.path
    assert not reads(pipeline.worker_function.role) and not reads(pipeline.worker_project.role)


def test_new_routes_are_proxied_and_the_log_route_needs_no_api_gateway_auth(built) -> None:
    _, _, resources = built
    parts = {r["Properties"]["PathPart"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Resource"}
    assert {"logs", "locks", "release"} <= parts
    for method in (r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Method"):
        assert method["Properties"]["Integration"]["Type"] == "AWS_PROXY"
    assert set(deployment.LINK_ROUTES) <= set(deployment.ROUTES)
    assert {("GET", "/locks"), ("POST", "/locks/release"), ("GET", "/runs/{run_id}/logs")} <= set(deployment.ROUTES)


def test_intake_may_change_lock_items_only_and_read_order_logs(built) -> None:
    stack, pipeline, resources = built
    role = pipeline.intake_function.role
    locks = f"<{lid(stack, pipeline.locks_table)}.Arn>"
    internal = f"<{lid(stack, pipeline.internal_bucket)}.Arn>"
    own = statements(stack, resources, role)
    writes = [s for s in own if locks in s["Resource"]
              and {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} & set(s["Action"])]
    assert writes and all(
        s["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] == ["prlock#*", "prlocks-of#*"]
        for s in writes), "a lease (keyed by the bare run id) must stay out of reach"
    assert any("dynamodb:Scan" in s["Action"] and locks in s["Resource"] for s in own)
    log = f"{internal}/{layout.log_key(RUN, ORDER)}"
    assert any("s3:GetObject" in s["Action"] and any(fnmatchcase(log, r) for r in s["Resource"]) for s in own)
    bundle = f"{internal}/{layout.bundle_key(RUN, ORDER)}"
    assert not any("s3:GetObject" in s["Action"] and any(fnmatchcase(bundle, r) for r in s["Resource"])
                   for s in own)
