"""IacCiPipeline properties: every invalid value is reported (all at once), and non-default values land."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, RemovalPolicy, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template

from iac_ci_constructs import IacCiPipeline, IacCiPipelineProps, IacCiPipelinePropsError
from lambda_runtime.job.validate import JobValidationError, parse_job
from lambda_runtime.schema import deployment, retention

KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ci/hmac-AbCdEf"


def problems(**props: Any) -> list[str]:
    stack = Stack(App(), "S")
    with pytest.raises(IacCiPipelinePropsError) as err:
        IacCiPipeline(stack, "IacCi", **props)
    assert stack.node.find_child("IacCi").node.children == []  # nothing was created
    return list(err.value.problems)


# ---- invalid values, one branch each -------------------------------------------------------------
def test_vpc_subnets_without_vpc() -> None:
    assert problems(vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)) == [
        "vpc_subnets is set but vpc is not: pass the vpc the subnets belong to"]


@pytest.mark.parametrize(("prop", "value", "message"), [
    ("worker_memory_mib", -1, "worker_memory_mib must be between 128 and 10240, got -1"),
    ("worker_memory_mib", 10241, "worker_memory_mib must be between 128 and 10240, got 10241"),
    ("packaging_memory_mib", 64, "packaging_memory_mib must be between 128 and 10240, got 64"),
    ("worker_memory_mib", "2048", "worker_memory_mib must be an integer, got '2048'"),
    ("worker_ephemeral_storage_mib", 256, "worker_ephemeral_storage_mib must be between 512 and 10240, got 256"),
    ("watchdog_grace_seconds", 0, "watchdog_grace_seconds must be between 1 and 3600, got 0"),
    ("internal_object_retention_days", 0, "internal_object_retention_days must be between 1 and 3650, got 0"),
    ("run_retention_days", 0, "run_retention_days must be between 1 and 3650, got 0"),
    ("done_object_retention_days", 4000, "done_object_retention_days must be between 1 and 3650, got 4000"),
    ("event_retention_days", 1.5, "event_retention_days must be an integer, got 1.5"),
    ("max_run_days", 0, "max_run_days must be between 1 and 7, got 0"),
    ("max_run_days", 8, "max_run_days must be between 1 and 7, got 8"),
    ("max_run_days", "7", "max_run_days must be an integer, got '7'"),
    ("api_throttling_rate_limit_per_second", 0, "api_throttling_rate_limit_per_second must be at least 1, got 0"),
    ("api_throttling_burst_limit", True, "api_throttling_burst_limit must be an integer, got True"),
])
def test_numbers_out_of_range(prop: str, value: Any, message: str) -> None:
    assert problems(**{prop: value}) == [message]


@pytest.mark.parametrize("arn", [
    "arn:aws:iam::123456789012:user/deployer",  # a user, not a role
    "deployer",
    "arn:aws:iam::12345:role/deployer",  # not an account id
    "arn:aws:iam::123456789012:role/deploy-[ab]",  # fnmatch class: IAM has no equivalent
])
def test_role_arn_that_is_not_an_iam_role_arn(arn: str) -> None:
    assert problems(allowed_role_arns=[arn]) == [
        f"allowed_role_arns: '{arn}' is not an IAM role ARN (arn:aws:iam::<account>:role/<name>; "
        "only * and ? wildcards)"]


def test_role_arn_patterns_with_iam_wildcards_are_accepted() -> None:
    props = IacCiPipelineProps(allowed_role_arns=["arn:aws:iam::123456789012:role/deploy-*",
                                                  "arn:aws-us-gov:iam::*:role/path/ci-?"])
    assert props.problems() == []


@pytest.mark.parametrize(("prop", "value", "message"), [
    ("allowed_ssm_prefixes", [""], "allowed_ssm_prefixes: an empty prefix would allow every name"),
    ("allowed_ssm_prefixes", ["/"],
     "allowed_ssm_prefixes: '/' is not a literal name prefix (no wildcards; not just '/')"),
    ("allowed_ssm_prefixes", ["/iac-ci/*"],
     "allowed_ssm_prefixes: '/iac-ci/*' is not a literal name prefix (no wildcards; not just '/')"),
    ("allowed_secret_prefixes", ["*"], "allowed_secret_prefixes: '*' is not a literal name prefix (no wildcards; "
                                       "not just '/')"),
    ("allowed_secret_prefixes", "iac-ci/", "allowed_secret_prefixes must be a sequence of prefixes, not a single "
                                           "string"),
    ("allowed_role_arns", "arn:aws:iam::123456789012:role/x",
     "allowed_role_arns must be a sequence of role ARNs, not a single string"),
])
def test_prefixes_that_would_widen_access(prop: str, value: Any, message: str) -> None:
    assert problems(**{prop: value}) == [message]


def test_source_buckets_must_be_buckets_not_names() -> None:
    assert problems(allowed_source_buckets=["my-bucket"]) == [
        "allowed_source_buckets must be a sequence of buckets (s3.IBucket), "
        "e.g. s3.Bucket.from_bucket_name(scope, id, name)"]


def test_lambda_compute_types_are_refused_for_codebuild() -> None:
    [message] = problems(codebuild_compute_type=codebuild.ComputeType.LAMBDA_2GB)
    assert message.startswith("codebuild_compute_type LAMBDA_2GB is not supported")


def test_image_directory_needs_a_dockerfile(tmp_path: Path) -> None:
    assert problems(image_directory=str(tmp_path)) == [f"image_directory '{tmp_path}' has no Dockerfile"]


def test_unknown_property_suggests_the_right_name() -> None:
    assert problems(worker_memory_mb=1024) == [
        "unknown property 'worker_memory_mb' (did you mean 'worker_memory_mib'?)"]


def test_every_problem_is_listed_at_once() -> None:
    found = problems(
        vpc_subnets=ec2.SubnetSelection(), worker_memory_mib=-5, allowed_role_arns=["nope"],
        allowed_ssm_prefixes=[""], watchdog_grace_seconds=99999, bogus=1,
    )
    assert len(found) == 6
    with pytest.raises(IacCiPipelinePropsError, match=r"6 invalid properties") as err:
        IacCiPipeline(Stack(App(), "S"), "IacCi", vpc_subnets=ec2.SubnetSelection(), worker_memory_mib=-5,
                      allowed_role_arns=["nope"], allowed_ssm_prefixes=[""], watchdog_grace_seconds=99999, bogus=1)
    text = str(err.value)
    for fragment in ("vpc_subnets", "worker_memory_mib", "'nope'", "allowed_ssm_prefixes", "watchdog_grace_seconds",
                     "unknown property 'bogus'"):
        assert fragment in text


def test_one_pipeline_per_stack() -> None:
    stack = Stack(App(), "S")
    IacCiPipeline(stack, "First")
    with pytest.raises(IacCiPipelinePropsError, match="already has an IacCiPipeline"):
        IacCiPipeline(stack, "Second")


def test_defaults_are_documented_behaviour() -> None:
    props = IacCiPipelineProps()
    assert props.architecture.name == lambda_.Architecture.ARM_64.name
    assert props.removal_policy == RemovalPolicy.RETAIN
    assert tuple(props.allowed_ssm_prefixes) == ("/iac-ci/",)
    assert tuple(props.allowed_secret_prefixes) == ("iac-ci/",)
    assert tuple(props.allowed_role_arns) == () and tuple(props.allowed_source_buckets) == ()
    assert props.problems() == []


# ---- non-default values ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def custom() -> tuple[App, Stack, IacCiPipeline, Template]:
    app = App()
    stack = Stack(app, "Custom")
    pipeline = IacCiPipeline(
        stack, "IacCi",
        architecture=lambda_.Architecture.X86_64,
        removal_policy=RemovalPolicy.DESTROY,
        log_retention=logs.RetentionDays.ONE_MONTH,
        worker_memory_mib=4096, worker_ephemeral_storage_mib=10240, packaging_memory_mib=2048,
        codebuild_compute_type=codebuild.ComputeType.LARGE,
        existing_kms_key=kms.Key.from_key_arn(stack, "Key", KEY_ARN),
        existing_webhook_secret=secretsmanager.Secret.from_secret_complete_arn(stack, "Secret", SECRET_ARN),
        existing_access_logs_bucket=s3.Bucket.from_bucket_name(stack, "Logs", "org-access-logs"),
        alarm_topic=sns.Topic(stack, "Alarms"),
        watchdog_grace_seconds=120, internal_object_retention_days=30, run_retention_days=3,
        done_object_retention_days=5, event_retention_days=30, max_run_days=2,
        api_throttling_rate_limit_per_second=50, api_throttling_burst_limit=100, api_cloud_watch_role=False,
    )
    return app, stack, pipeline, Template.from_stack(stack)


def test_x86_64_everywhere(custom) -> None:
    app, stack, _, template = custom
    for fn in template.find_resources("AWS::Lambda::Function").values():
        if "ImageConfig" in fn["Properties"]:
            assert fn["Properties"]["Architectures"] == ["x86_64"]
    template.has_resource_properties("AWS::CodeBuild::Project", {"Environment": {
        "Type": "LINUX_CONTAINER", "ComputeType": "BUILD_GENERAL1_LARGE", "Image": Match.any_value(),
        "ImagePullCredentialsType": "SERVICE_ROLE", "PrivilegedMode": False}})
    assets = json.loads((Path(app.outdir) / f"{stack.artifact_id}.assets.json").read_text())
    [image] = assets["dockerImages"].values()
    assert image["source"]["platform"] == "linux/amd64"
    assert image["source"]["dockerBuildArgs"] == {"IMAGE_PLATFORM": "linux/amd64"}


def test_destroy_removal_policy_applies_to_stateful_resources(custom) -> None:
    _, stack, pipeline, template = custom
    state = stack.resolve(pipeline.state_bucket.node.default_child.logical_id)
    for typ in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::Logs::LogGroup"):
        for logical_id, res in template.find_resources(typ).items():
            if logical_id != state:
                assert res["DeletionPolicy"] == "Delete", typ


def test_the_state_bucket_is_retained_whatever_the_removal_policy(custom) -> None:
    """With ``RemovalPolicy.DESTROY`` the state bucket and its objects stay, and none of its objects or
    noncurrent versions ever expires."""
    _, stack, pipeline, template = custom
    bucket = template.to_json()["Resources"][stack.resolve(pipeline.state_bucket.node.default_child.logical_id)]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert [r["Id"] for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]] == ["AbortIncompleteUploads"]
    assert not template.find_resources("Custom::S3AutoDeleteObjects")
    # its TLS-only policy stays with it; the other buckets' policies go with theirs
    state_id = stack.resolve(pipeline.state_bucket.node.default_child.logical_id)
    policies = {p["Properties"]["Bucket"]["Ref"]: p.get("DeletionPolicy", "Delete")
                for p in template.find_resources("AWS::S3::BucketPolicy").values()}
    assert policies.pop(state_id) == "Retain"
    assert policies and set(policies.values()) == {"Delete"}


def test_existing_key_secret_and_log_bucket_are_used_not_created(custom) -> None:
    _, stack, pipeline, template = custom
    template.resource_count_is("AWS::KMS::Key", 0)
    template.resource_count_is("AWS::SecretsManager::Secret", 1)  # only the log-link key, which has no existing_*
    template.resource_count_is("AWS::S3::Bucket", 3)
    assert template.to_json()["Outputs"][deployment.OUTPUT_WEBHOOK_SECRET_ARN]["Value"] == SECRET_ARN
    env = template.to_json()["Resources"][stack.resolve(pipeline.intake_function.node.default_child.logical_id)][
        "Properties"]["Environment"]["Variables"]
    assert env["IAC_CI_KMS_KEY_ARN"] == KEY_ARN and env["IAC_CI_WEBHOOK_SECRET_ID"] == SECRET_ARN
    assert env["IAC_CI_WATCHDOG_GRACE_SECONDS"] == "120"
    for bucket in template.find_resources("AWS::S3::Bucket").values():
        assert bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"] == "org-access-logs"


def test_alarms_notify_the_topic(custom) -> None:
    _, _, _, template = custom
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    assert alarms
    for alarm in alarms.values():
        assert len(alarm["Properties"]["AlarmActions"]) == 1 and len(alarm["Properties"]["OKActions"]) == 1


def test_sizes_log_retention_and_throttling(custom) -> None:
    _, stack, pipeline, template = custom
    resources = template.to_json()["Resources"]
    worker = resources[stack.resolve(pipeline.worker_function.node.default_child.logical_id)]["Properties"]
    assert worker["MemorySize"] == 4096 and worker["EphemeralStorage"] == {"Size": 10240}
    for group in template.find_resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30
    template.has_resource_properties("AWS::ApiGateway::Stage", {"MethodSettings": [Match.object_like(
        {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100})]})
    template.resource_count_is("AWS::ApiGateway::Account", 0)
    assert (pipeline.settings.run_retention_days, pipeline.settings.event_ttl_days) == (3, 30)
    # max_run_days=2 reaches intake: a job may not outlast the objects its run keeps
    assert pipeline.settings.max_run_days == 2
    policy = pipeline.settings.validation_policy()
    assert policy.max_job_timeout == 2 * retention.DAY_SECONDS
    job = {"name": "long", "orders": [{"name": "a", "cmds": ["true"]}]}
    assert parse_job({**job, "timeout": 2 * retention.DAY_SECONDS}, policy).timeout == 2 * retention.DAY_SECONDS
    with pytest.raises(JobValidationError) as refused:
        parse_job({**job, "timeout": 2 * retention.DAY_SECONDS + 1}, policy)
    assert [str(p) for p in refused.value.problems] == [
        "job: timeout: 172801 seconds is longer than this deployment lets a run last: at most 172800 (max_run_days 2)"]


def expirations(stack: Stack, resources: dict[str, Any], bucket: s3.IBucket) -> dict[str, tuple[int, int]]:
    """Rule id -> (ExpirationInDays, NoncurrentDays) of a bucket's expiring rules."""
    rules = resources[stack.resolve(bucket.node.default_child.logical_id)]["Properties"]["LifecycleConfiguration"]
    return {r["Id"]: (r["ExpirationInDays"], r["NoncurrentVersionExpiration"]["NoncurrentDays"])
            for r in rules["Rules"] if "ExpirationInDays" in r}


def test_lifecycle_follows_the_retention_props(custom) -> None:
    """Each prefix its own retention, ``runs/`` that many days after ``max_run_days``; a noncurrent version a
    day after it stops being current, whatever the retention."""
    _, stack, pipeline, template = custom
    resources = template.to_json()["Resources"]
    assert expirations(stack, resources, pipeline.internal_bucket) == {
        "ExpireJobs": (30, 1), "ExpireWebhooks": (30, 1), "ExpireCallbacks": (30, 1), "ExpireRuns": (30 + 2, 1)}
    assert expirations(stack, resources, pipeline.done_bucket) == {"ExpireDone": (5, 1)}


@pytest.mark.parametrize("max_run_days", range(1, retention.MAX_RUN_DAYS + 1))
def test_a_run_at_the_longest_timeout_ends_before_its_objects_expire(max_run_days: int) -> None:
    """The cap intake applies to a job's ``timeout`` and the ``runs/`` expiry come from the same days."""
    longest = retention.max_job_timeout(max_run_days)
    assert longest == max_run_days * retention.DAY_SECONDS
    assert retention.run_object_days(1, max_run_days) * retention.DAY_SECONDS == longest + retention.DAY_SECONDS
    assert retention.max_job_timeout() == retention.MAX_JOB_TIMEOUT


def test_events_must_outlive_runs() -> None:
    with pytest.raises(IacCiPipelinePropsError) as info:
        IacCiPipeline(Stack(App(), "S"), "IacCi", run_retention_days=10, event_retention_days=5)
    assert "event_retention_days (5) must be at least run_retention_days (10)" in str(info.value)


def test_a_run_is_never_kept_longer_than_its_logs() -> None:
    """A run's objects (logs, artifacts) outlive the run itself: kept 30 days, its runs/ objects are kept 30
    days after the longest run, whatever the (shorter) retention of the other internal objects."""
    stack = Stack(App(), "S")
    pipeline = IacCiPipeline(stack, "IacCi", run_retention_days=30, internal_object_retention_days=2,
                             event_retention_days=30, max_run_days=3)
    resources = Template.from_stack(stack).to_json()["Resources"]
    rules = expirations(stack, resources, pipeline.internal_bucket)
    assert rules["ExpireRuns"] == (33, 1)
    assert {days for rule, (days, _) in rules.items() if rule != "ExpireRuns"} == {2}


# ---- the constructor's signature is the props ------------------------------------------------------
def keyword_parameters() -> list[inspect.Parameter]:
    return [p for p in inspect.signature(IacCiPipeline.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]


def same_default(a: Any, b: Any) -> bool:
    """Equal, or the same jsii constant (a static property may hand out a new proxy per access)."""
    return a == b or (type(a) is type(b) and getattr(a, "name", None) is not None and a.name == b.name)


def test_constructor_keywords_are_the_props_fields() -> None:
    """Names, order, types and defaults: the signature cannot drift from IacCiPipelineProps."""
    fields = dataclasses.fields(IacCiPipelineProps)
    parameters = keyword_parameters()
    assert [p.name for p in parameters] == [f.name for f in fields]
    hints, field_hints = typing.get_type_hints(IacCiPipeline.__init__), typing.get_type_hints(IacCiPipelineProps)
    for parameter, field in zip(parameters, fields, strict=True):
        assert hints[parameter.name] == field_hints[field.name], field.name
        assert field.default is not dataclasses.MISSING, field.name  # every property is optional
        assert same_default(parameter.default, field.default), field.name
    [rest] = [p for p in inspect.signature(IacCiPipeline.__init__).parameters.values()
              if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert hints[rest.name] is typing.Never  # misspelt keywords: reported at run time, rejected by type checkers


def test_constructor_forwards_every_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each keyword reaches its own field (a unique sentinel per property; stopped before anything is built)."""
    captured: list[IacCiPipelineProps] = []

    def capture(self: IacCiPipelineProps, *, unknown: Any = None) -> IacCiPipelineProps:
        captured.append(self)
        raise IacCiPipelinePropsError(["captured"])

    monkeypatch.setattr(IacCiPipelineProps, "validated", capture)
    sentinels = {p.name: object() for p in keyword_parameters()}
    with pytest.raises(IacCiPipelinePropsError):
        IacCiPipeline(Stack(App(), "S"), "IacCi", **sentinels)
    [props] = captured
    assert {name: getattr(props, name) for name in sentinels} == sentinels


def test_every_property_documents_the_behaviour_of_its_default() -> None:
    source = Path(inspect.getfile(IacCiPipelineProps)).read_text()
    [cls] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "IacCiPipelineProps"]
    docs = {a.target.id: b.value.value for a, b in itertools.pairwise(cls.body)
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}
    for field in dataclasses.fields(IacCiPipelineProps):
        assert "Default:" in docs.get(field.name, ""), field.name


def test_from_kwargs_validates_as_the_constructor_does() -> None:
    with pytest.raises(IacCiPipelinePropsError) as err:
        IacCiPipelineProps.from_kwargs({"worker_memory_mb": 1, "worker_memory_mib": 1})
    assert list(err.value.problems) == ["unknown property 'worker_memory_mb' (did you mean 'worker_memory_mib'?)",
                                        "worker_memory_mib must be between 128 and 10240, got 1"]
    assert IacCiPipelineProps.from_kwargs({"worker_memory_mib": 4096}).worker_memory_mib == 4096
