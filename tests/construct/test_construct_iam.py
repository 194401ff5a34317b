"""Least privilege: each role may do what its runtime component calls, on exactly the keys it uses.

Keys are built with the runtime's own layout functions and matched (fnmatch, as IAM matches ``*``)
against the synthesized policies, so a key the code uses but the policy misses fails here, not in
production (S3 answers 403, not 404, to a role that cannot list).
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from iac_ci_constructs import IacCiPipeline
from iac_ci_constructs.iam import SOPS_CONTEXT_KEYS
from iac_ci_constructs.nag import CODEBUILD_VPC_ACTIONS, XRAY_ACTIONS, flatten_cfn_reference
from lambda_runtime import watchdog
from lambda_runtime.schema import deployment, layout

ROLE_PATTERN = "arn:aws:iam::123456789012:role/deploy-*"
SOURCE_BUCKET = "iac-ci-sources"
RUN, ORDER = "0123456789abcdef", "deploy-dev"


class Built:
    def __init__(self, stack: Stack, pipeline: IacCiPipeline, template: Template):
        self.stack, self.pipeline, self.template = stack, pipeline, template
        self.resources = template.to_json()["Resources"]

    def lid(self, construct: Any) -> str:
        return self.stack.resolve(construct.node.default_child.logical_id)

    def statements(self, role: Any) -> list[dict[str, Any]]:
        """Every statement of the policies attached to ``role`` (resources flattened as cdk-nag does)."""
        ref = {"Ref": self.stack.resolve(role.node.default_child.logical_id)}
        out = []
        for res in self.resources.values():
            if res["Type"] == "AWS::IAM::Policy" and ref in res["Properties"]["Roles"]:
                for s in res["Properties"]["PolicyDocument"]["Statement"]:
                    out.append({**s, "Action": _list(s["Action"]),
                                "Resource": [flatten_cfn_reference(r) for r in _list(s["Resource"])]})
        assert out, "role has no policy"
        return out

    def bucket_arn(self, bucket: s3.IBucket) -> str:
        return f"<{self.lid(bucket)}.Arn>"

    def allows(self, role: Any, action: str, resource: str) -> bool:
        return any(action in s["Action"] and any(fnmatchcase(resource, r) for r in s["Resource"])
                   for s in self.statements(role) if s["Effect"] == "Allow")

    def can_object(self, role: Any, action: str, bucket: s3.IBucket, key: str) -> bool:
        return self.allows(role, action, f"{self.bucket_arn(bucket)}/{key}")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def app_stacks() -> tuple[Built, Built]:
    app = App()
    default_stack = Stack(app, "Default")
    default = IacCiPipeline(default_stack, "IacCi")
    custom_stack = Stack(app, "Custom")
    sources = s3.Bucket.from_bucket_name(custom_stack, "Sources", SOURCE_BUCKET)
    custom = IacCiPipeline(custom_stack, "IacCi", allowed_role_arns=[ROLE_PATTERN], allowed_source_buckets=[sources],
                           allowed_ssm_prefixes=["/iac-ci/", "/shared/terraform/"],
                           vpc=ec2.Vpc(custom_stack, "Vpc", max_azs=2, nat_gateways=1))
    return (Built(default_stack, default, Template.from_stack(default_stack)),
            Built(custom_stack, custom, Template.from_stack(custom_stack)))


@pytest.fixture(scope="module")
def default(app_stacks) -> Built:
    return app_stacks[0]


@pytest.fixture(scope="module")
def custom(app_stacks) -> Built:
    return app_stacks[1]


def roles(b: Built) -> dict[str, Any]:
    p = b.pipeline
    return {"intake": p.intake_function.role, "packaging": p.packaging_function.role,
            "orchestrator": p.orchestrator_function.role, "worker": p.worker_function.role,
            "codebuild": p.worker_project.role, "watchdog": p.watchdog.role}


# ---- across roles ------------------------------------------------------------------------------
def test_roles_have_no_managed_policies_and_no_action_wildcards(default: Built) -> None:
    for name, role in roles(default).items():
        assert "ManagedPolicyArns" not in default.resources[default.lid(role)]["Properties"], name
        for s in default.statements(role):
            assert not any("*" in a for a in s["Action"]), (name, s["Action"])


def test_resource_star_only_where_aws_requires_it(custom: Built) -> None:
    required = XRAY_ACTIONS | {"ecr:GetAuthorizationToken", "logs:CreateLogDelivery", "logs:GetLogDelivery",
                               "logs:UpdateLogDelivery", "logs:DeleteLogDelivery", "logs:ListLogDeliveries",
                               "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
                               "ssm:DescribeParameters", "scheduler:ListSchedules"}
    required |= CODEBUILD_VPC_ACTIONS
    for name, role in roles(custom).items():
        for s in custom.statements(role):
            if "*" in s["Resource"]:
                assert set(s["Action"]) <= required, (name, s["Action"])


# ---- packaging -----------------------------------------------------------------------------------
def test_packaging_reads_only_allow_listed_parameters_and_secrets(default: Built, custom: Built) -> None:
    role = default.pipeline.packaging_function.role
    ssm = [r for s in default.statements(role) if "ssm:GetParameter" in s["Action"] for r in s["Resource"]]
    assert ssm == ["arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter/iac-ci/*"]
    secrets = [r for s in default.statements(role) if "secretsmanager:GetSecretValue" in s["Action"]
               for r in s["Resource"]]
    assert sorted(secrets) == sorted([  # the policy's grants, and the key signing the PR comment's log links
        "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:iac-ci/*",
        f"<{default.lid(default.pipeline.log_link_secret)}>"])
    custom_ssm = {r for s in custom.statements(custom.pipeline.packaging_function.role)
                  if "ssm:GetParameter" in s["Action"] for r in s["Resource"]}
    assert {r.rsplit(":parameter/", 1)[1] for r in custom_ssm} == {"iac-ci/*", "shared/terraform/*"}


def test_no_role_reads_every_parameter_or_secret(custom: Built) -> None:
    for name, role in roles(custom).items():
        for s in custom.statements(role):
            for r in s["Resource"]:
                assert not r.endswith(":parameter/*") and not r.endswith(":secret:*"), (name, r)
                assert not ("ssm:GetParameter" in s["Action"] and r == "*"), name


def test_only_dispatch_assumes_roles_and_only_from_the_allow_list(default: Built, custom: Built) -> None:
    """Credentials are created when an order is dispatched (``orchestrator.minting``), never at packaging."""
    for built in (default, custom):
        packaging = built.pipeline.packaging_function.role
        assert not any("sts:AssumeRole" in s["Action"] for s in built.statements(packaging))
    assert not any("sts:AssumeRole" in s["Action"]
                   for s in default.statements(default.pipeline.orchestrator_function.role))
    assume = [s for s in custom.statements(custom.pipeline.orchestrator_function.role)
              if "sts:AssumeRole" in s["Action"]]
    assert [s["Resource"] for s in assume] == [[ROLE_PATTERN]]


def test_packaging_reads_zip_sources_only_from_allowed_buckets(default: Built, custom: Built) -> None:
    role = custom.pipeline.packaging_function.role
    assert custom.allows(role, "s3:GetObject", f"arn:<AWS::Partition>:s3:::{SOURCE_BUCKET}/app/v1.zip")
    assert not custom.allows(role, "s3:GetObject", "arn:<AWS::Partition>:s3:::another/app.zip")
    env = custom.resources[custom.lid(custom.pipeline.packaging_function)]["Properties"]["Environment"]["Variables"]
    assert env["IAC_CI_ALLOWED_SOURCE_BUCKETS"] == SOURCE_BUCKET  # intake rejects other buckets up front
    assert not any(r.endswith(":::*/*") or r == "arn:<AWS::Partition>:s3:::*"
                   for s in default.statements(default.pipeline.packaging_function.role) for r in s["Resource"])


def test_only_dispatch_encrypts_with_the_sops_key_bound_to_run_and_order(default: Built) -> None:
    packaging = default.pipeline.packaging_function.role
    assert not any(a.startswith("kms:") for s in default.statements(packaging) for a in s["Action"])
    statements = [s for s in default.statements(default.pipeline.orchestrator_function.role)
                  if any(a.startswith("kms:") for a in s["Action"])]
    assert [s["Action"] for s in statements] == [["kms:Encrypt"]]
    assert statements[0]["Condition"]["ForAllValues:StringEquals"] == {"kms:EncryptionContextKeys":
                                                                         list(SOPS_CONTEXT_KEYS)}


def test_packaging_object_access(default: Built) -> None:
    p, role = default.pipeline, default.pipeline.packaging_function.role
    for prefix, consumer in deployment.NOTIFICATIONS.items():
        if consumer == "packaging":
            key = layout.job_key(RUN) if prefix == layout.JOBS_PREFIX else f"{prefix}github/delivery-1.json"
            assert default.can_object(role, "s3:GetObject", p.internal_bucket, key)
    assert default.can_object(role, "s3:PutObject", p.internal_bucket, layout.bundle_key(RUN, ORDER))
    assert default.can_object(role, "s3:PutObject", p.internal_bucket, layout.control_key(RUN, layout.SIGNAL_PACKAGED))
    assert not default.can_object(role, "s3:PutObject", p.internal_bucket, layout.result_key(RUN, ORDER))
    assert not default.can_object(role, "s3:GetObject", p.internal_bucket, layout.bundle_key(RUN, ORDER))


# ---- orchestrator -------------------------------------------------------------------------------------
def test_orchestrator_lists_callbacks_so_absent_keys_are_404(default: Built) -> None:
    role = default.pipeline.orchestrator_function.role
    listing = [s for s in default.statements(role) if "s3:ListBucket" in s["Action"]]
    assert len(listing) == 1
    assert listing[0]["Resource"] == [default.bucket_arn(default.pipeline.internal_bucket)]
    assert listing[0]["Condition"] == {"StringLike": {"s3:prefix": [layout.CALLBACKS_PREFIX + "*"]}}


def test_orchestrator_covers_what_it_presigns_for_workers(default: Built) -> None:
    p, role = default.pipeline, default.pipeline.orchestrator_function.role
    internal = p.internal_bucket
    for key in (layout.bundle_key(RUN, ORDER), layout.artifacts_key(RUN, "build"), layout.result_key(RUN, ORDER)):
        assert default.can_object(role, "s3:GetObject", internal, key), key
    for key in (layout.log_key(RUN, ORDER), layout.artifacts_key(RUN, ORDER), layout.result_key(RUN, ORDER)):
        assert default.can_object(role, "s3:PutObject", internal, key), key
    assert default.can_object(role, "s3:PutObject", p.done_bucket, layout.done_key(RUN))
    assert not default.can_object(role, "s3:PutObject", internal, layout.job_key(RUN))
    assert not default.can_object(role, "s3:GetObject", internal, layout.job_key(RUN))


def test_orchestrator_transactions_dispatch_and_watchdogs(default: Built) -> None:
    p, role = default.pipeline, default.pipeline.orchestrator_function.role
    arn = {"orders": f"<{default.lid(p.orders_table)}.Arn>", "events": f"<{default.lid(p.order_events_table)}.Arn>",
           "locks": f"<{default.lid(p.locks_table)}.Arn>"}
    for action in ("dynamodb:Query", "dynamodb:UpdateItem"):
        assert default.allows(role, action, arn["orders"])
    assert default.allows(role, "dynamodb:PutItem", arn["events"])
    assert default.allows(role, "dynamodb:ConditionCheckItem", arn["locks"])  # the fence inside each transaction
    assert default.allows(role, "dynamodb:UpdateItem", arn["locks"])
    assert not default.allows(role, "dynamodb:DeleteItem", arn["orders"])
    assert default.allows(role, "states:StartExecution", f"<{default.lid(p.watchdog)}>")
    assert default.allows(role, "lambda:InvokeFunction", f"<{default.lid(p.worker_function)}.Arn>")
    for action in ("codebuild:StartBuild", "codebuild:StopBuild"):
        assert default.allows(role, action, f"<{default.lid(p.worker_project)}.Arn>")
    assert not default.allows(role, "lambda:InvokeFunction", f"<{default.lid(p.intake_function)}.Arn>")


# ---- workers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["worker", "codebuild"])
def test_workers_only_decrypt_with_the_run_and_order_context(default: Built, which: str) -> None:
    role = roles(default)[which]
    failures = f"<{default.lid(default.pipeline.worker_failure_queue)}.Arn>"
    ours = [s for s in default.statements(role)
            if not set(s["Action"]) <= XRAY_ACTIONS
            and not all(a.startswith(("logs:", "ecr:", "codebuild:")) for a in s["Action"])
            and s["Resource"] != [failures]]  # the worker's on-failure destination (Lambda sends to it)
    assert [s["Action"] for s in ours] == [["kms:Decrypt"]]
    assert ours[0]["Resource"] == [f"<{default.lid(default.pipeline.kms_key)}.Arn>"]
    assert ours[0]["Condition"] == {
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": list(SOPS_CONTEXT_KEYS)},
        "Null": {"kms:EncryptionContextKeys": "false"},
    }
    assert not any(a.startswith(("s3:", "dynamodb:", "secretsmanager:", "ssm:")) for s in default.statements(role)
                   for a in s["Action"])


def test_workers_in_a_vpc_can_manage_their_network_interfaces(custom: Built) -> None:
    role = custom.pipeline.worker_function.role
    assert custom.allows(role, "ec2:CreateNetworkInterface", "*")
    fn = custom.resources[custom.lid(custom.pipeline.worker_function)]["Properties"]
    assert fn["VpcConfig"]["SubnetIds"]
    project = custom.resources[custom.lid(custom.pipeline.worker_project)]["Properties"]
    assert project["VpcConfig"]["Subnets"]


# ---- intake and watchdog ----------------------------------------------------------------------------
def test_intake_writes_submissions_and_cancel_signals_and_reads_only_its_secret(default: Built) -> None:
    p, role = default.pipeline, default.pipeline.intake_function.role
    assert default.can_object(role, "s3:PutObject", p.internal_bucket, layout.job_key(RUN))
    assert default.can_object(role, "s3:PutObject", p.internal_bucket, layout.control_key(RUN, layout.SIGNAL_CANCEL))
    assert not default.can_object(role, "s3:PutObject", p.internal_bucket, layout.result_key(RUN, ORDER))
    assert not default.can_object(role, "s3:PutObject", p.internal_bucket, layout.control_key(RUN, "packaged"))
    secrets = {r for s in default.statements(role) if "secretsmanager:GetSecretValue" in s["Action"]
               for r in s["Resource"]}
    assert secrets == {f"<{default.lid(p.webhook_secret)}>", f"<{default.lid(p.log_link_secret)}>"}
    assert default.allows(role, "states:StartExecution", f"<{default.lid(p.watchdog)}>")  # the job timeout
    for action in ("dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        assert default.allows(role, action, f"<{default.lid(p.idempotency_table)}.Arn>")


class RecordingSfn:
    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []

    def start_execution(self, **kwargs: Any) -> dict[str, str]:
        self.inputs.append(json.loads(kwargs["input"]))
        return {"executionArn": "arn:aws:states:us-east-1:123456789012:execution:wd:x"}


def test_watchdog_may_touch_exactly_the_keys_the_runtime_gives_it(default: Built) -> None:
    p, role = default.pipeline, default.pipeline.watchdog.role
    sfn = RecordingSfn()
    watchdog.start(sfn, "arn:aws:states:us-east-1:123456789012:stateMachine:wd", run_id=RUN, subject=ORDER,
                   deadline=0, bucket="b", key=layout.result_key(RUN, ORDER), body="{}")
    watchdog.start_job_timeout(sfn, "arn:aws:states:us-east-1:123456789012:stateMachine:wd", bucket="b", run_id=RUN,
                               deadline=0)
    assert len(sfn.inputs) == 2
    for execution in sfn.inputs:
        assert default.can_object(role, "s3:GetObject", p.internal_bucket, execution["key"])
        assert default.can_object(role, "s3:PutObject", p.internal_bucket, execution["key"])
        assert default.can_object(role, "s3:PutObject", p.internal_bucket, execution["wake_key"])
    assert not default.can_object(role, "s3:PutObject", p.internal_bucket, layout.job_key(RUN))
    assert not default.can_object(role, "s3:PutObject", p.internal_bucket, layout.bundle_key(RUN, ORDER))
    listing = [s for s in default.statements(role) if "s3:ListBucket" in s["Action"]]
    assert listing[0]["Condition"] == {"StringLike": {"s3:prefix": [layout.CALLBACKS_PREFIX + "*"]}}
