"""Pipelines beyond pull requests: the schedule group and its role, owner schedules, the event bus and
the rules on it, and the worker images the CodeBuild role may pull.

Two stacks, synthesized once: ``Pipelines`` (owner schedules, worker images, rules on the default
bus) and ``OwnBus`` (an event bus of its own, nothing else).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from aws_cdk import App, NestedStack, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template
from constructs import Construct

from iac_ci_constructs import IacCiPipeline, IacCiPipelineProps, IacCiPipelinePropsError
from iac_ci_constructs.nag import flatten_cfn_reference
from iac_ci_constructs.notifications import DEPLOYMENT_NAME, deployment_name
from iac_ci_constructs.worker_images import ecr_repository
from lambda_runtime.pipelines.schedules import ScheduledJob, Schedules
from lambda_runtime.schema.events import DRIFT_DETECTED, ORDER_STATE_CHANGE, RUN_STATE_CHANGE, SOURCE
from lambda_runtime.schema.images import ImageAllowList, WorkerImage
from lambda_runtime.settings import Settings

NIGHTLY = ScheduledJob("org/app", "nightly", "0 6 * * 1-5")
TOOLS_REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/tools"
IMAGES = {
    "tools": WorkerImage(uri=f"{TOOLS_REPO}:*", privileged=True),
    "tools-stable": WorkerImage(uri=f"{TOOLS_REPO}:1.4"),  # the same repository: one grant
    "terraform": WorkerImage(uri="hashicorp/terraform:1.9"),  # public: nothing to grant
}
ECR_PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
DEFAULT_BUS_ARN = "arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:event-bus/default"


class Built:
    def __init__(self, stack: Stack, pipeline: IacCiPipeline, **extra: Any):
        self.stack, self.pipeline, self.extra = stack, pipeline, extra
        self.resources = Template.from_stack(stack).to_json()["Resources"]

    def lid(self, construct: Any) -> str:
        return self.stack.resolve(construct.node.default_child.logical_id)

    def of_type(self, typ: str) -> dict[str, dict[str, Any]]:
        return {k: v.get("Properties", {}) for k, v in self.resources.items() if v["Type"] == typ}

    def statements(self, role: iam.IRole) -> list[dict[str, Any]]:
        """Every statement attached to ``role``, actions as lists and resources flattened as cdk-nag does."""
        ref = {"Ref": self.lid(role)}
        return [{**s, "Action": _list(s["Action"]),
                 "Resource": [flatten_cfn_reference(r) for r in _list(s["Resource"])]}
                for p in self.of_type("AWS::IAM::Policy").values() if ref in p["Roles"]
                for s in p["PolicyDocument"]["Statement"]]

    def env(self, function: Any) -> dict[str, Any]:
        return self.resources[self.lid(function)]["Properties"]["Environment"]["Variables"]

    def engine_functions(self) -> dict[str, Any]:
        p = self.pipeline
        return {"intake": p.intake_function, "packaging": p.packaging_function, "orchestrator": p.orchestrator_function}

    def roles(self) -> dict[str, iam.IRole]:
        p = self.pipeline
        return {"intake": p.intake_function.role, "packaging": p.packaging_function.role,
                "orchestrator": p.orchestrator_function.role, "worker": p.worker_function.role,
                "codebuild": p.worker_project.role, "watchdog": p.watchdog.role}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def stacks() -> dict[str, Built]:
    app = App()
    stack = Stack(app, "Pipelines")
    inbox = sqs.Queue(stack, "Inbox")
    pipeline = IacCiPipeline(stack, "IacCi", schedules=[NIGHTLY], images=IMAGES)
    rules = {
        "failures": pipeline.on_run_finished(targets.SqsQueue(inbox), statuses=["failed", "timed_out"]),
        "finished": pipeline.on_run_finished(targets.SqsQueue(inbox)),
        "approvals": pipeline.on_order_state_change(targets.SqsQueue(inbox), statuses=["awaiting_approval"]),
        "orders": pipeline.on_order_state_change(targets.SqsQueue(inbox)),
        "drift": pipeline.on_drift_detected(targets.SqsQueue(inbox)),
    }
    own = Stack(app, "OwnBus")
    bus = events.EventBus(own, "Bus")
    own_pipeline = IacCiPipeline(own, "IacCi", event_bus=bus)
    own_inbox = sqs.Queue(own, "Inbox")
    own_rule = own_pipeline.on_drift_detected(targets.SqsQueue(own_inbox))
    return {"pipelines": Built(stack, pipeline, inbox=inbox, rules=rules),
            "own": Built(own, own_pipeline, bus=bus, inbox=own_inbox, rule=own_rule)}


@pytest.fixture(scope="module")
def built(stacks) -> Built:
    return stacks["pipelines"]


# ---- schedules -------------------------------------------------------------------------------------
def test_one_schedule_group_whose_role_may_only_send_to_the_packaging_queue(built: Built) -> None:
    # the runtime's group, and the owner's (its schedules are out of the runtime's reach)
    p = built.pipeline
    assert sorted(built.of_type("AWS::Scheduler::ScheduleGroup")) == sorted(
        [built.stack.resolve(p.schedule_group_name)["Ref"], built.stack.resolve(p.owner_schedule_group.ref)["Ref"]])
    role = built.pipeline.scheduler_role
    props = built.resources[built.lid(role)]["Properties"]
    assert "ManagedPolicyArns" not in props
    assert props["AssumeRolePolicyDocument"]["Statement"] == [{
        "Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"},
        "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]
    queue = built.lid(built.pipeline.packaging_queue)
    assert [(s["Effect"], s["Action"], s["Resource"]) for s in built.statements(role)] == [
        ("Allow", ["sqs:SendMessage"], [f"<{queue}.Arn>"])]
    # the queue the packaging function consumes
    [mapping] = [m for m in built.of_type("AWS::Lambda::EventSourceMapping").values()
                 if m["FunctionName"] == {"Ref": built.lid(built.pipeline.packaging_function)}]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}


def test_packaging_manages_the_schedules_of_its_group_and_passes_only_the_scheduler_role(built: Built) -> None:
    p = built.pipeline
    group = built.stack.resolve(p.schedule_group_name)["Ref"]
    statements = {s["Sid"]: s for s in built.statements(p.packaging_function.role) if "Sid" in s}
    reconcile = statements["ReconcileSchedules"]
    assert sorted(reconcile["Action"]) == ["scheduler:CreateSchedule", "scheduler:DeleteSchedule",
                                           "scheduler:GetSchedule", "scheduler:UpdateSchedule"]
    assert reconcile["Resource"] == [
        f"arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:schedule/<{group}>/*"]
    assert (statements["ListSchedules"]["Action"], statements["ListSchedules"]["Resource"]) == (
        ["scheduler:ListSchedules"], ["*"])
    passing = statements["PassSchedulerRole"]
    assert (passing["Action"], passing["Resource"]) == (["iam:PassRole"], [f"<{built.lid(p.scheduler_role)}.Arn>"])
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
    for name, role in built.roles().items():
        actions = {a for s in built.statements(role) for a in s["Action"]}
        if name != "packaging":
            assert not {a for a in actions if a.startswith("scheduler:") or a == "iam:PassRole"}, name


def test_every_engine_function_gets_the_schedule_settings(built: Built) -> None:
    p = built.pipeline
    expected = {
        "IAC_CI_SCHEDULE_GROUP": built.stack.resolve(p.schedule_group_name),
        "IAC_CI_SCHEDULER_ROLE_ARN": {"Fn::GetAtt": [built.lid(p.scheduler_role), "Arn"]},
        "IAC_CI_SCHEDULE_QUEUE_ARN": {"Fn::GetAtt": [built.lid(p.packaging_queue), "Arn"]},
    }
    for name, function in built.engine_functions().items():
        env = built.env(function)
        assert {k: env[k] for k in expected} == expected, name
        settings = Settings.from_env({k: v if isinstance(v, str) else "token" for k, v in env.items()})
        assert settings.schedules_enabled, name


class RecordingScheduler:
    """The Scheduler client of ``pipelines.schedules.Schedules``: an empty group, creations recorded."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def list_schedules(self, **_: Any) -> dict[str, Any]:
        return {"Schedules": []}

    def create_schedule(self, **kwargs: Any) -> None:
        self.created.append(kwargs)


def test_an_owner_schedule_is_what_the_runtime_would_create(built: Built) -> None:
    """Same name, expression, time zone, window and target as ``Schedules.reconcile`` would create (whose API
    arguments are CloudFormation's property names), in the owner's group, marked as the owner's."""
    p = built.pipeline
    recorder = RecordingScheduler()
    owned = dataclasses.replace(NIGHTLY, owner=True)
    Schedules(scheduler=recorder, group="GROUP", queue_arn="QUEUE", role_arn="ROLE").reconcile(NIGHTLY.repo, [owned])
    [created] = recorder.created
    created.pop("Description")  # for people; the runtime compares expression and input only
    created["GroupName"] = built.stack.resolve(p.owner_schedule_group.ref)
    created["Target"] |= {"Arn": {"Fn::GetAtt": [built.lid(p.packaging_queue), "Arn"]},
                          "RoleArn": {"Fn::GetAtt": [built.lid(p.scheduler_role), "Arn"]}}
    [schedule] = built.of_type("AWS::Scheduler::Schedule").values()
    assert schedule == created
    assert schedule["ScheduleExpression"] == "cron(0 6 ? * MON-FRI *)"
    assert schedule["Target"]["Input"] == owned.message() and json.loads(owned.message())["owner"] is True
    assert schedule["ScheduleExpressionTimezone"] == "UTC" and schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}


def test_without_owner_schedules_the_group_is_empty(stacks) -> None:
    assert stacks["own"].of_type("AWS::Scheduler::Schedule") == {}
    assert len(stacks["own"].of_type("AWS::Scheduler::ScheduleGroup")) == 1


@pytest.mark.parametrize(("job", "message"), [
    (ScheduledJob("org/app", "nightly", "0 6 * *"), "must have 5 fields"),
    (ScheduledJob("org/app", "nightly", "0 6 1 * 1"), "sets both day-of-month and day-of-week"),
    (ScheduledJob("not-a-repo", "nightly", "0 6 * * *"), "the repository must be <owner>/<name>"),
    (ScheduledJob("org/app", "Nightly Build", "0 6 * * *"), "the job name must match"),
    (ScheduledJob("org/app", "n" * 64, "0 6 * * *"), "at most 63 characters"),
])
def test_invalid_owner_schedules_are_refused(job: ScheduledJob, message: str) -> None:
    [problem] = IacCiPipelineProps(schedules=[job]).problems()
    assert problem.startswith(f"schedules: {job.repo} job {job.job}") and message in problem


def test_a_schedule_declared_twice_is_refused() -> None:
    assert IacCiPipelineProps(schedules=[NIGHTLY, NIGHTLY]).problems() == [
        "schedules: org/app job nightly at '0 6 * * 1-5': declared twice"]
    assert IacCiPipelineProps(schedules=["0 6 * * *"]).problems() == [  # type: ignore[list-item]
        "schedules must be a sequence of ScheduledJob(repo, job, cron)"]


def test_an_owner_schedule_of_a_github_app_deployment_names_its_installation() -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_secretsmanager as secretsmanager

    app_secret = secretsmanager.Secret(Stack(App(), "AppKey"), "Key")
    webhook = secretsmanager.Secret(app_secret.stack, "Hook")
    [problem] = IacCiPipelineProps(schedules=[NIGHTLY], github_app_secret=app_secret,
                                   github_webhook_secret=webhook).problems()
    assert problem == ("schedules: org/app job nightly at '0 6 * * 1-5': a GitHub App deployment reads the "
                       "repository as one of its installations: give installation_id")
    installed = dataclasses.replace(NIGHTLY, installation_id=44110021)
    assert IacCiPipelineProps(schedules=[installed], github_app_secret=app_secret,
                              github_webhook_secret=webhook).problems() == []


# ---- notifications -----------------------------------------------------------------------------------
def rule_of(b: Built, rule: events.Rule) -> dict[str, Any]:
    return b.resources[b.lid(rule)]["Properties"]


def test_rules_match_exactly_this_deployments_events(built: Built) -> None:
    name = built.pipeline.deployment_name
    assert name == "Pipelines-IacCi"
    expected = {
        "failures": (RUN_STATE_CHANGE, {"final": [True], "status": ["failed", "timed_out"]}),
        "finished": (RUN_STATE_CHANGE, {"final": [True]}),
        "approvals": (ORDER_STATE_CHANGE, {"status": ["awaiting_approval"]}),
        "orders": (ORDER_STATE_CHANGE, {}),
        "drift": (DRIFT_DETECTED, {}),
    }
    inbox = {"Fn::GetAtt": [built.lid(built.extra["inbox"]), "Arn"]}
    for key, (detail_type, detail) in expected.items():
        rule = rule_of(built, built.extra["rules"][key])
        assert rule["EventPattern"] == {"source": [SOURCE], "detail-type": [detail_type],
                                        "detail": {"deployment": [name], **detail}}, key
        assert rule["EventBusName"] == "default"
        assert [t["Arn"] for t in rule["Targets"]] == [inbox], key
    assert len({built.lid(r) for r in built.extra["rules"].values()}) == len(expected)  # one rule per call
    assert len(built.of_type("AWS::Events::Rule")) == len(expected)


def test_functions_know_the_bus_and_the_deployment_name(built: Built) -> None:
    for function in built.engine_functions().values():
        env = built.env(function)
        assert env["IAC_CI_EVENT_BUS"] == "default"
        assert env["IAC_CI_DEPLOYMENT_NAME"] == built.pipeline.deployment_name


def test_only_the_state_changing_functions_publish_and_only_to_the_bus(built: Built) -> None:
    """Packaging moves runs (accepted, packaging, running); the orchestrator moves orders and finalizes runs."""
    for name, role in built.roles().items():
        publishing = [s for s in built.statements(role) if "events:PutEvents" in s["Action"]]
        if name in ("packaging", "orchestrator"):
            assert [(s["Action"], s["Resource"]) for s in publishing] == [(["events:PutEvents"], [DEFAULT_BUS_ARN])]
        else:
            assert publishing == [], name


def test_an_event_bus_of_its_own(stacks) -> None:
    own = stacks["own"]
    bus = own.stack.resolve(own.extra["bus"].node.default_child.logical_id)
    for function in own.engine_functions().values():
        assert own.env(function)["IAC_CI_EVENT_BUS"] == {"Ref": bus}
    for role in (own.pipeline.packaging_function.role, own.pipeline.orchestrator_function.role):
        assert [s["Resource"] for s in own.statements(role) if "events:PutEvents" in s["Action"]] == [[f"<{bus}.Arn>"]]
    assert rule_of(own, own.extra["rule"])["EventBusName"] == {"Ref": bus}
    assert own.pipeline.event_bus is own.extra["bus"]


@pytest.mark.parametrize(("method", "statuses", "message"), [
    ("on_run_finished", ["running"], "are not final run statuses"),
    ("on_run_finished", [], "non-empty sequence"),
    ("on_run_finished", "failed", "non-empty sequence"),
    ("on_order_state_change", ["done"], "are not order statuses"),
])
def test_statuses_a_rule_would_never_see_are_refused(built: Built, method: str, statuses: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        getattr(built.pipeline, method)(targets.SqsQueue(built.extra["inbox"]), statuses=statuses)


def test_deployment_names_always_fit_and_stay_put() -> None:
    app = App()
    long = Construct(Stack(app, "s" * 100), "My Pipeline")
    name = deployment_name(long)
    assert DEPLOYMENT_NAME.match(name) and len(name) == 64 and name == deployment_name(long)
    assert deployment_name(Construct(Stack(app, "Prod"), "Ci Engine")) == "Prod-Ci-Engine"
    nested = NestedStack(Stack(app, "Parent"), "Nested")  # its stack name is a token: the path is used
    assert deployment_name(Construct(nested, "IacCi")) == "Parent-Nested-IacCi"


# ---- worker images ---------------------------------------------------------------------------------------
def test_every_engine_function_gets_the_image_allow_list(built: Built) -> None:
    expected = ImageAllowList(images=IMAGES).to_json()
    for name, function in built.engine_functions().items():
        assert built.env(function)["IAC_CI_IMAGES"] == expected, name
        assert json.loads(built.env(function)["IAC_CI_IMAGES"])["tools"]["privileged"] is True
    assert set(built.env(built.pipeline.worker_function)) == {"POWERTOOLS_SERVICE_NAME"}


def test_codebuild_pulls_the_allowed_ecr_repository_and_nothing_broader(built: Built, stacks) -> None:
    statements = built.statements(built.pipeline.worker_project.role)
    ours = [s for s in statements if s.get("Sid") == "PullAllowedImages"]
    assert [(sorted(s["Action"]), s["Resource"]) for s in ours] == [
        (sorted(ECR_PULL), ["arn:<AWS::Partition>:ecr:eu-west-1:123456789012:repository/team/tools"])]
    pulls = [r for s in statements if set(s["Action"]) & set(ECR_PULL) for r in s["Resource"]]
    assert len(pulls) == 2 and not any("*" in r for r in pulls)  # the runtime image's asset repository, and ours
    tokens = [s for s in statements if "ecr:GetAuthorizationToken" in s["Action"]]
    assert tokens and all(s["Action"] == ["ecr:GetAuthorizationToken"] and s["Resource"] == ["*"] for s in tokens)
    worker = built.statements(built.pipeline.worker_function.role)
    assert not any(a.startswith("ecr:") for s in worker for a in s["Action"])  # Lambda pulls with its service
    own = stacks["own"].statements(stacks["own"].pipeline.worker_project.role)
    assert not [s for s in own if s.get("Sid") in ("PullAllowedImages", "AllowedImagesRegistryToken")]


@pytest.mark.parametrize("uri", [
    "12345.dkr.ecr.eu-west-1.amazonaws.com/tools:1",  # a registry, but not an account's
    "123456789012.dkr.ecr.amazonaws.com/tools:1",  # no region
])
def test_an_ecr_image_that_cannot_be_granted_is_refused_by_name(uri: str) -> None:
    images = {"broken": WorkerImage(uri=uri), "terraform": IMAGES["terraform"]}
    with pytest.raises(ValueError, match="an ECR image URI must be") as err:
        IacCiPipeline(Stack(App(), "Broken"), "IacCi", images=images)
    assert isinstance(err.value, IacCiPipelinePropsError)
    assert [p for p in err.value.problems if "broken" in p] == list(err.value.problems)
    assert f"'broken' ({uri})" in str(err.value)


def test_image_repositories_parse_from_their_uris() -> None:
    tag = ecr_repository(WorkerImage(uri=f"{TOOLS_REPO}:*"))
    digest = ecr_repository(WorkerImage(uri=f"{TOOLS_REPO}@sha256:{'a' * 64}"))
    assert tag == digest and (tag.account, tag.region, tag.name, tag.china) == (
        "123456789012", "eu-west-1", "team/tools", False)
    china = ecr_repository(WorkerImage(uri="123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/tools:1"))
    assert china.arn(Stack(App(), "Any")) == "arn:aws-cn:ecr:cn-north-1:123456789012:repository/tools"


def test_images_are_checked_as_the_runtime_reads_them() -> None:
    assert IacCiPipelineProps(images={"Tools": IMAGES["terraform"]}).problems()[0].startswith(
        "images: Value error, image names must match")
    assert IacCiPipelineProps(images={"tools": "hashicorp/terraform"}).problems() == [  # type: ignore[dict-item]
        "images: 'tools' must be a WorkerImage, got str"]
    many = {f"image-{i}": WorkerImage(uri=f"registry.example.com/team/image-{i}:1.0.0") for i in range(40)}
    [problem] = IacCiPipelineProps(images=many).problems()
    assert problem.startswith("images: ") and "a Lambda environment leaves for them" in problem
