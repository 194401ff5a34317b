"""IacCiPipeline with its defaults: every resource kind and its key properties, synthesized once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Stage
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Capture, Match, Template

from iac_ci_constructs import IacCiPipeline
from iac_ci_constructs.monitoring import TIMED_OUT_STATE
from lambda_runtime import watchdog
from lambda_runtime.schema import deployment, layout
from lambda_runtime.schema.contract import BUILDSPEC_COMMAND
from lambda_runtime.schema.tables import ORDER_EVENTS, ORDERS, TABLES
from lambda_runtime.settings import Settings

EXTRA_ROUTE = ("POST", "/webhooks/example")


@pytest.fixture(scope="module")
def built() -> tuple[Stack, IacCiPipeline, Template]:
    app = App()
    stack = Stack(app, "Default")
    pipeline = IacCiPipeline(stack, "IacCi")
    pipeline.add_route(*EXTRA_ROUTE)
    pipeline.grant_submit(iam.Role(stack, "Submitter", assumed_by=iam.AccountRootPrincipal()))
    return stack, pipeline, Template.from_stack(stack)


@pytest.fixture(scope="module")
def template(built) -> Template:
    return built[2]


@pytest.fixture(scope="module")
def resources(template) -> dict[str, dict[str, Any]]:
    return template.to_json()["Resources"]


def of_type(resources: dict[str, dict[str, Any]], typ: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if v["Type"] == typ}


def logical_id(stack: Stack, construct: Any) -> str:
    return stack.resolve(construct.node.default_child.logical_id)


def functions(resources) -> dict[str, dict[str, Any]]:
    """The four image functions by handler component (intake, packaging, orchestrator, worker)."""
    by_handler = {v: k for k, v in deployment.HANDLERS.items()}
    out = {}
    for fn in of_type(resources, "AWS::Lambda::Function").values():
        command = fn["Properties"].get("ImageConfig", {}).get("Command")
        if command:
            out[by_handler[command[0]]] = fn
    return out


# ---- inventory ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("typ", "count"), [
    ("AWS::DynamoDB::Table", len(TABLES)),
    ("AWS::S3::Bucket", 4),  # internal, done, state, access logs
    ("AWS::SQS::Queue", 2 * len(set(deployment.NOTIFICATIONS.values())) + 1),  # + DLQs, + worker failures
    ("AWS::KMS::Key", 1),
    ("AWS::SecretsManager::Secret", 2),  # the API signing key, the log-link key
    ("AWS::CodeBuild::Project", 1),
    ("AWS::StepFunctions::StateMachine", 1),
    ("AWS::ApiGateway::RestApi", 1),
    ("AWS::Lambda::EventSourceMapping", 2),
    ("AWS::Lambda::EventInvokeConfig", 1),
    ("Custom::S3BucketNotifications", 1),
])
def test_resource_counts(template: Template, typ: str, count: int) -> None:
    template.resource_count_is(typ, count)


# ---- tables --------------------------------------------------------------------------------------
@pytest.mark.parametrize("definition", TABLES, ids=[t.logical_name for t in TABLES])
def test_table_equals_what_the_embedded_runner_creates(built, definition) -> None:
    stack, pipeline, template = built
    props = template.to_json()["Resources"][logical_id(stack, pipeline.tables[definition.logical_name])]["Properties"]
    expected = definition.create_table_kwargs("ignored")
    assert props["KeySchema"] == expected["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == expected["AttributeDefinitions"]
    assert props["BillingMode"] == expected["BillingMode"]
    assert props.get("GlobalSecondaryIndexes", []) == expected.get("GlobalSecondaryIndexes", [])
    if definition.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {"AttributeName": definition.ttl_attribute, "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props


def test_tables_have_pitr_encryption_and_are_retained(template: Template) -> None:
    tables = template.find_resources("AWS::DynamoDB::Table")
    for table in tables.values():
        assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True}
        assert table["DeletionPolicy"] == "Retain" and table["UpdateReplacePolicy"] == "Retain"


# ---- buckets ------------------------------------------------------------------------------------
def test_buckets_are_encrypted_versioned_private_and_retained(template: Template) -> None:
    for bucket in template.find_resources("AWS::S3::Bucket").values():
        p = bucket["Properties"]
        assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "AES256"}
        assert p["VersioningConfiguration"] == {"Status": "Enabled"}
        assert p["PublicAccessBlockConfiguration"] == dict.fromkeys(
            ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True)
        assert bucket["DeletionPolicy"] == "Retain"


def test_every_bucket_policy_denies_insecure_transport(template: Template) -> None:
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 4
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool") == {"aws:SecureTransport": "false"}
                   for s in statements)


def test_data_buckets_log_server_access(built) -> None:
    stack, pipeline, template = built
    resources = template.to_json()["Resources"]
    logs_bucket = logical_id(stack, pipeline.access_logs_bucket)
    for bucket in (pipeline.internal_bucket, pipeline.done_bucket, pipeline.state_bucket):
        config = resources[logical_id(stack, bucket)]["Properties"]["LoggingConfiguration"]
        assert config["DestinationBucketName"] == {"Ref": logs_bucket}


def _lifecycle(stack: Stack, resources: dict[str, Any], bucket: Any) -> list[dict[str, Any]]:
    return list(resources[logical_id(stack, bucket)]["Properties"].get("LifecycleConfiguration", {}).get("Rules", []))


ABORT_UPLOADS = {"Id": "AbortIncompleteUploads", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                 "Status": "Enabled"}
DELETE_MARKERS = {"Id": "RemoveExpiredDeleteMarkers", "ExpiredObjectDeleteMarker": True, "Status": "Enabled"}


def expire(rule_id: str, prefix: str | None, days: int) -> dict[str, Any]:
    """An expiring rule as synthesized: its noncurrent versions go a day after they stop being current."""
    rule = {"Id": rule_id, "ExpirationInDays": days, "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            "Status": "Enabled"}
    return rule | ({"Prefix": prefix} if prefix is not None else {})


def test_retention_defaults_follow_the_design(built) -> None:
    """A day for a final run's items, its done summary and the transient objects; a run's own objects a day
    after the longest run; each expired object's noncurrent version a day later; 90 days of order events;
    the state bucket never expires."""
    stack, pipeline, template = built
    resources = template.to_json()["Resources"]
    assert _lifecycle(stack, resources, pipeline.internal_bucket) == [
        ABORT_UPLOADS, expire("ExpireJobs", "jobs/", 1), expire("ExpireWebhooks", "webhooks/", 1),
        expire("ExpireCallbacks", "callbacks/", 1), expire("ExpireRuns", "runs/", 8), DELETE_MARKERS]
    assert set(deployment.NOTIFICATIONS) | {layout.RUNS_PREFIX} == {r.get("Prefix") for r in _lifecycle(
        stack, resources, pipeline.internal_bucket)} - {None}  # every prefix the engine writes expires
    assert _lifecycle(stack, resources, pipeline.done_bucket) == [
        ABORT_UPLOADS, expire("ExpireDone", None, 1), DELETE_MARKERS]
    assert _lifecycle(stack, resources, pipeline.access_logs_bucket) == [
        ABORT_UPLOADS, expire("ExpireAccessLogs", None, 365), DELETE_MARKERS]
    # Terraform state and its history: nothing expires, not even a noncurrent version
    assert _lifecycle(stack, resources, pipeline.state_bucket) == [ABORT_UPLOADS]
    for table in (ORDERS, ORDER_EVENTS):  # TTL written by the runtime: a day after the run ends, 90 days
        ttl = resources[logical_id(stack, pipeline.tables[table.logical_name])]["Properties"]
        assert ttl["TimeToLiveSpecification"] == {"AttributeName": "expire_at", "Enabled": True}
    assert (pipeline.settings.run_retention_days, pipeline.settings.event_ttl_days) == (1, 90)


def test_bucket_notifications_route_each_prefix_to_its_queue(built) -> None:
    stack, pipeline, template = built
    queues = {"packaging": pipeline.packaging_queue, "orchestrator": pipeline.callbacks_queue}
    config = next(iter(template.find_resources("Custom::S3BucketNotifications").values()))["Properties"][
        "NotificationConfiguration"]["QueueConfigurations"]
    got = {c["Filter"]["Key"]["FilterRules"][0]["Value"]: (c["QueueArn"]["Fn::GetAtt"][0], c["Events"]) for c in config}
    assert got == {prefix: (logical_id(stack, queues[consumer]), ["s3:ObjectCreated:*"])
                   for prefix, consumer in deployment.NOTIFICATIONS.items()}


# ---- queues ---------------------------------------------------------------------------------------
def test_queue_visibility_is_six_times_the_consumers_timeout(built) -> None:
    stack, pipeline, template = built
    resources = template.to_json()["Resources"]
    expected = {
        pipeline.packaging_queue: deployment.QUEUE_VISIBILITY_FACTOR * deployment.PACKAGING_TIMEOUT_SECONDS,
        pipeline.callbacks_queue: deployment.QUEUE_VISIBILITY_FACTOR * deployment.ORCHESTRATOR_TIMEOUT_SECONDS,
    }
    for queue, visibility in expected.items():
        assert resources[logical_id(stack, queue)]["Properties"]["VisibilityTimeout"] == visibility


def test_queues_have_dead_letter_queues_and_encryption(built) -> None:
    stack, pipeline, template = built
    resources = template.to_json()["Resources"]
    for queue, dlq in ((pipeline.packaging_queue, pipeline.packaging_dead_letter_queue),
                       (pipeline.callbacks_queue, pipeline.callbacks_dead_letter_queue)):
        redrive = resources[logical_id(stack, queue)]["Properties"]["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [logical_id(stack, dlq), "Arn"]}
        assert redrive["maxReceiveCount"] == 5
    for queue in template.find_resources("AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    for policy in template.find_resources("AWS::SQS::QueuePolicy").values():
        assert any(s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool") == {"aws:SecureTransport": "false"}
                   for s in policy["Properties"]["PolicyDocument"]["Statement"])


def test_event_sources_report_batch_item_failures(built) -> None:
    stack, pipeline, template = built
    for function, queue, batch in ((pipeline.packaging_function, pipeline.packaging_queue, 1),
                                   (pipeline.orchestrator_function, pipeline.callbacks_queue, 10)):
        template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
            "FunctionName": {"Ref": logical_id(stack, function)},
            "EventSourceArn": {"Fn::GetAtt": [logical_id(stack, queue), "Arn"]},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BatchSize": batch,
        })


# ---- key and secret ----------------------------------------------------------------------------------
def test_kms_key_rotates_and_is_retained(template: Template) -> None:
    template.has_resource("AWS::KMS::Key", {"Properties": Match.object_like({"EnableKeyRotation": True}),
                                            "DeletionPolicy": "Retain"})


def test_webhook_secret_is_generated_and_retained(template: Template) -> None:
    template.has_resource("AWS::SecretsManager::Secret", {
        "Properties": Match.object_like({"GenerateSecretString": {"ExcludePunctuation": True, "PasswordLength": 64}}),
        "DeletionPolicy": "Retain"})


# ---- one image for everything ---------------------------------------------------------------------------
def test_one_function_per_handler_all_from_the_same_image(resources) -> None:
    fns = functions(resources)
    assert set(fns) == set(deployment.HANDLERS)
    uris = {json.dumps(fn["Properties"]["Code"]["ImageUri"], sort_keys=True) for fn in fns.values()}
    assert len(uris) == 1
    for fn in fns.values():
        assert fn["Properties"]["PackageType"] == "Image"
        assert fn["Properties"]["Architectures"] == ["arm64"]
        assert fn["Properties"]["TracingConfig"] == {"Mode": "Active"}


def test_one_image_asset_staged_from_the_narrowed_context(built) -> None:
    """Synth needs no Docker: the asset is the staged build context, built at deploy time."""
    stack = built[0]
    outdir = Path(Stage.of(stack).outdir)
    images = json.loads((outdir / f"{stack.artifact_id}.assets.json").read_text())["dockerImages"]
    [asset] = images.values()
    assert asset["source"]["platform"] == "linux/arm64"
    assert asset["source"]["dockerBuildArgs"] == {"IMAGE_PLATFORM": "linux/arm64"}
    staged = {p.name for p in (outdir / asset["source"]["directory"]).iterdir()}
    assert staged == {".dockerignore", "setup.py", "pyproject.toml", "README.md", "lambda_runtime", "iac_ci_constructs"}
    assert asset["source"]["dockerFile"] == "iac_ci_constructs/assets/Dockerfile"  # the one copy, package data


def test_codebuild_project_runs_the_same_image_and_the_buildspec_command(resources) -> None:
    project = next(iter(of_type(resources, "AWS::CodeBuild::Project").values()))["Properties"]
    image_uri = next(iter(functions(resources).values()))["Properties"]["Code"]["ImageUri"]
    assert project["Environment"]["Image"] == image_uri
    assert project["Environment"]["Type"] == "ARM_CONTAINER"
    assert project["Environment"]["ComputeType"] == "BUILD_GENERAL1_SMALL"
    assert project["Environment"]["PrivilegedMode"] is False
    assert project["Environment"]["ImagePullCredentialsType"] == "SERVICE_ROLE"
    assert json.loads(project["Source"]["BuildSpec"])["phases"]["build"]["commands"] == [BUILDSPEC_COMMAND]
    assert project["TimeoutInMinutes"] == 480


def test_function_timeouts_and_sizes(resources) -> None:
    fns = {k: v["Properties"] for k, v in functions(resources).items()}
    assert fns["intake"]["Timeout"] == deployment.INTAKE_TIMEOUT_SECONDS
    assert fns["packaging"]["Timeout"] == deployment.PACKAGING_TIMEOUT_SECONDS
    assert fns["orchestrator"]["Timeout"] == deployment.ORCHESTRATOR_TIMEOUT_SECONDS
    assert fns["worker"]["Timeout"] == deployment.WORKER_FUNCTION_TIMEOUT_SECONDS
    assert fns["worker"]["MemorySize"] == 2048 and fns["worker"]["EphemeralStorage"] == {"Size": 4096}
    assert fns["packaging"]["MemorySize"] == 1024


def test_worker_is_never_retried_and_failures_go_to_a_queue(built) -> None:
    stack, pipeline, template = built
    template.has_resource_properties("AWS::Lambda::EventInvokeConfig", {
        "FunctionName": {"Ref": logical_id(stack, pipeline.worker_function)},
        "MaximumRetryAttempts": deployment.WORKER_ASYNC_RETRIES,
        "MaximumEventAgeInSeconds": 300,  # the watchdog's grace
        "DestinationConfig": {"OnFailure": {"Destination": {
            "Fn::GetAtt": [logical_id(stack, pipeline.worker_failure_queue), "Arn"]}}},
    })
    assert deployment.WORKER_ASYNC_RETRIES == 0


def test_engine_functions_get_the_settings_environment(built, resources) -> None:
    stack, pipeline, _ = built
    expected = set(pipeline.settings.to_env()) | {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
    for component, fn in functions(resources).items():
        env = fn["Properties"]["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == f"iac-ci-{component}"
        if component == "worker":
            assert set(env) == {"POWERTOOLS_SERVICE_NAME"}  # the worker reads its payload, nothing else
            continue
        assert set(env) == expected
        # what the runtime parses at start-up: every required setting is there
        settings = Settings.from_env({k: v if isinstance(v, str) else "token" for k, v in env.items()})
        assert settings.allowed_ssm_prefixes == ("/iac-ci/",) and settings.embedded is False
        assert env["IAC_CI_WATCHDOG_ARN"] == {"Ref": logical_id(stack, pipeline.watchdog)}
        assert env["IAC_CI_WORKER_FUNCTION"] == {"Ref": logical_id(stack, pipeline.worker_function)}


# ---- watchdog --------------------------------------------------------------------------------------------
def test_watchdog_runs_the_runtime_definition_with_logs_and_tracing(template: Template) -> None:
    machine = next(iter(template.find_resources("AWS::StepFunctions::StateMachine").values()))["Properties"]
    assert json.loads(machine["DefinitionString"]) == watchdog.definition()
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["TracingConfiguration"] == {"Enabled": True}
    assert machine["LoggingConfiguration"]["Level"] == "ALL"


def test_watchdog_timeouts_metric_counts_the_timed_out_state(template: Template) -> None:
    assert watchdog.definition()["States"][TIMED_OUT_STATE]["Type"] == "Succeed"
    pattern = Capture()
    template.has_resource_properties("AWS::Logs::MetricFilter", {"FilterPattern": pattern})
    assert TIMED_OUT_STATE in pattern.as_string() and "SucceedStateEntered" in pattern.as_string()


# ---- API ---------------------------------------------------------------------------------------------
def test_every_route_is_proxied_to_intake(built) -> None:
    stack, pipeline, template = built
    intake = logical_id(stack, pipeline.intake_function)
    methods = template.find_resources("AWS::ApiGateway::Method")
    assert len(methods) == len(deployment.ROUTES) + len(deployment.IAM_ROUTES) + 1  # + the fixture's route
    iam_authorized = 0
    for method in methods.values():
        p = method["Properties"]
        assert p["Integration"]["Type"] == "AWS_PROXY"
        assert intake in json.dumps(p["Integration"]["Uri"])
        # HMAC-signed requests are checked by intake; approve/reject by API Gateway (the caller is the reviewer)
        assert p["AuthorizationType"] in ("NONE", "AWS_IAM")
        iam_authorized += p["AuthorizationType"] == "AWS_IAM"
    assert iam_authorized == len(deployment.IAM_ROUTES)
    assert sorted(m["Properties"]["HttpMethod"] for m in methods.values()) == sorted(
        method for method, _ in (*deployment.ROUTES, *deployment.IAM_ROUTES, EXTRA_ROUTE))


def test_routes_and_added_routes_create_their_paths(template: Template) -> None:
    resources = template.find_resources("AWS::ApiGateway::Resource")
    parts = {r["Properties"]["PathPart"] for r in resources.values()}
    routes = (*deployment.ROUTES, *deployment.IAM_ROUTES, EXTRA_ROUTE)
    expected = {part for _, path in routes for part in path.strip("/").split("/")}
    assert parts == expected


def test_stage_is_throttled_logged_and_traced(template: Template) -> None:
    template.has_resource_properties("AWS::ApiGateway::Stage", {
        "StageName": "v1",
        "TracingEnabled": True,
        "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
        "MethodSettings": [Match.object_like({
            "ThrottlingRateLimit": 10, "ThrottlingBurstLimit": 20, "LoggingLevel": "ERROR",
            "DataTraceEnabled": False, "MetricsEnabled": True})],
    })


# ---- outputs, alarms, grants, metrics -------------------------------------------------------------------
def test_outputs_have_the_names_the_cli_reads(template: Template) -> None:
    outputs = template.to_json()["Outputs"]
    for name in (deployment.OUTPUT_API_URL, deployment.OUTPUT_WEBHOOK_SECRET_ARN, deployment.OUTPUT_DONE_BUCKET,
                 deployment.OUTPUT_INTERNAL_BUCKET, deployment.OUTPUT_STATE_BUCKET, deployment.OUTPUT_ORDERS_TABLE,
                 deployment.OUTPUT_EVENTS_TABLE):
        assert name in outputs, name


def test_alarms_cover_dead_letters_function_errors_and_the_watchdog(built) -> None:
    stack, pipeline, template = built
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    metrics = sorted(a["Properties"]["MetricName"] for a in alarms.values())
    assert metrics == sorted(["ApproximateNumberOfMessagesVisible"] * 3 + ["Errors"] * 4
                             + ["ExecutionsFailed", "5XXError"])
    assert all("AlarmActions" not in a["Properties"] for a in alarms.values())  # no alarm_topic given
    assert len(pipeline.alarms) == len(alarms)


def test_grant_submit_reads_the_secret_and_invokes_the_api(built) -> None:
    stack, pipeline, template = built
    submitter = stack.resolve(stack.node.find_child("Submitter").node.default_child.logical_id)
    policy = next(p for p in template.find_resources("AWS::IAM::Policy").values()
                  if p["Properties"]["Roles"] == [{"Ref": submitter}])
    actions = {a for s in policy["Properties"]["PolicyDocument"]["Statement"]
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"secretsmanager:GetSecretValue", "execute-api:Invoke", "cloudformation:DescribeStacks"} <= actions


def test_metrics_are_named_after_the_official_metrics(built) -> None:
    stack, pipeline, _ = built
    assert pipeline.metric_watchdog_timeouts().metric_name == "WatchdogTimeouts"
    assert pipeline.metric_watchdog_executions_failed().metric_name == "ExecutionsFailed"
    assert pipeline.metric_api_server_errors().metric_name == "5XXError"
    dead = pipeline.metric_dead_letter_messages()
    assert len(dead.using_metrics) == 3
    assert {m.metric_name for m in dead.using_metrics.values()} == {"ApproximateNumberOfMessagesVisible"}
    assert {m.metric_name for m in pipeline.metric_function_errors().using_metrics.values()} == {"Errors"}


def test_attributes_point_at_the_resources(built) -> None:
    stack, pipeline, _ = built
    assert stack.resolve(pipeline.orders_table.table_name) == {"Ref": logical_id(stack, pipeline.orders_table)}
    assert stack.resolve(pipeline.api_url)["Fn::Join"]
    assert set(pipeline.tables) == {t.logical_name for t in TABLES}
    for name in ("internal_bucket", "done_bucket", "state_bucket", "kms_key", "webhook_secret", "worker_project",
                 "watchdog", "api", "intake_function", "packaging_function", "orchestrator_function",
                 "worker_function", "image", "watchdog_log_group"):
        assert getattr(pipeline, name) is not None, name


# ---- the CodeBuild worker's buildspec: no shell keeps the payload, the commands run unprivileged ----------


def _buildspec(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    project = next(iter(of_type(resources, "AWS::CodeBuild::Project").values()))["Properties"]
    return json.loads(project["Source"]["BuildSpec"])


def test_the_buildspec_execs_the_worker_as_root_without_run_as(resources) -> None:
    spec = _buildspec(resources)
    commands = spec["phases"]["build"]["commands"]
    assert commands == [BUILDSPEC_COMMAND] and commands[0].startswith("exec ")
    assert "run-as" not in json.dumps(spec)  # the worker keeps root; it drops the commands to the command user
    assert set(spec["phases"]) == {"build"}  # nothing runs after the exec'd worker


def test_the_synthesized_buildspec_command_leaves_no_shell_above_the_worker(resources, tmp_path: Path) -> None:
    """Run the template's own command with a stand-in ``python``: it must be the shell's process itself
    (exec), so no shell ancestor keeps the payload variable in its environment."""
    import subprocess

    (tmp_path / "python").write_text('#!/bin/sh\necho "$$ $*"\n')
    (tmp_path / "python").chmod(0o755)
    command = _buildspec(resources)["phases"]["build"]["commands"][0]
    proc = subprocess.Popen(["sh", "-c", command], env={"PATH": f"{tmp_path}:/usr/bin:/bin", "X": "payload"},
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert out.split() == [str(proc.pid), "-m", "lambda_runtime.worker"]


def test_the_image_creates_the_unprivileged_command_user() -> None:
    from iac_ci_constructs import image
    from lambda_runtime.worker.sandbox import COMMAND_USER

    dockerfile = image.dockerfile_text()
    entry = next(line for line in dockerfile.splitlines() if f"'{COMMAND_USER}:x:" in line and "/etc/passwd" in line)
    uid, gid = entry.split(f"'{COMMAND_USER}:x:", 1)[1].split(":")[:2]
    assert int(uid) > 0 and int(gid) > 0
    assert f"'{COMMAND_USER}:x:{gid}:' >> /etc/group" in dockerfile
    assert f"id {COMMAND_USER}" in dockerfile  # the image build fails if the user is missing
