"""Observability in the synthesized template: the dashboard and the metrics it shows (in the
deployment's namespace, which the functions write their EMF to), X-Ray tracing on every function,
the watchdog and the API stage, and both turned off by their props (cdk-nag and cfn-lint clean)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Aspects, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from iac_ci_constructs import IacCiPipeline, IacCiPipelineProps
from lambda_runtime.observability import metrics
from lambda_runtime.schema.status import ORDER_FINAL, RUN_FINAL

pytestmark = pytest.mark.slow  # two synths, one with every AwsSolutions rule


@pytest.fixture(scope="module")
def on() -> tuple[IacCiPipeline, dict[str, Any]]:
    stack = Stack(App(), "Observed")
    pipeline = IacCiPipeline(stack, "IacCi")
    return pipeline, Template.from_stack(stack).to_json()["Resources"]


@pytest.fixture(scope="module")
def off() -> tuple[IacCiPipeline, Stack, dict[str, Any]]:
    app = App()
    stack = Stack(app, "Dark")
    pipeline = IacCiPipeline(stack, "IacCi", dashboard=False, tracing=False)
    Aspects.of(app).add(AwsSolutionsChecks())
    return pipeline, stack, Template.from_stack(stack).to_json()["Resources"]


def of_type(resources: dict[str, Any], typ: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if v["Type"] == typ}


def dashboard_body(resources: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's JSON, with every CloudFormation reference in it as the name of what it refers to."""
    (dashboard,) = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]

    def text(part: Any) -> str:
        if isinstance(part, str):
            return part
        if "Ref" in part:
            return f"<{part['Ref']}>"
        if "Fn::GetAtt" in part:
            return f"<{'.'.join(part['Fn::GetAtt'])}>"
        return "<token>"

    return dict(json.loads("".join(text(p) for p in parts)))


def graphs(body: dict[str, Any]) -> dict[str, list[list[Any]]]:
    return {w["properties"]["title"]: w["properties"].get("metrics", []) for w in body["widgets"]
            if w["type"] == "metric"}


def emf_metric(line: list[Any]) -> tuple[str, str, dict[str, str], str]:
    """(namespace, name, dimensions, statistic) of a dashboard metric line."""
    namespace, name, *rest = line
    options = rest.pop() if rest and isinstance(rest[-1], dict) else {}
    return namespace, name, dict(zip(rest[::2], rest[1::2], strict=True)), options.get("stat", "")


# ---- the dashboard -------------------------------------------------------------------------------
def test_the_dashboard_shows_runs_and_orders_by_outcome_in_the_deployments_namespace(on) -> None:
    pipeline, resources = on
    assert isinstance(pipeline.dashboard, cloudwatch.Dashboard)
    namespace = pipeline.metrics_namespace
    assert namespace.startswith("IacCi/ObservedIacCi")
    charts = graphs(dashboard_body(resources))
    runs = [emf_metric(m) for m in charts["Runs by outcome"]]
    assert runs == [(namespace, metrics.RUNS_FINISHED, {metrics.OUTCOME: o}, "Sum") for o in sorted(RUN_FINAL)]
    orders = [emf_metric(m) for m in charts["Orders by outcome"]]
    assert orders == [(namespace, metrics.ORDERS_FINISHED, {metrics.OUTCOME: o}, "Sum") for o in sorted(ORDER_FINAL)]


@pytest.mark.parametrize(("title", "metric"), [
    ("Order duration (p50, p90, p99)", metrics.ORDER_DURATION),
    ("Queue wait (p50, p90, p99)", metrics.QUEUE_WAIT),
    ("Dispatch latency (p50, p90, p99)", metrics.DISPATCH_LATENCY),
])
def test_the_timings_are_percentiles_of_the_orchestrators_emf(on, title: str, metric: str) -> None:
    pipeline, resources = on
    lines = [emf_metric(m) for m in graphs(dashboard_body(resources))[title]]
    service = {metrics.SERVICE_DIMENSION: metrics.SERVICE}
    assert lines == [(pipeline.metrics_namespace, metric, service, p) for p in ("p50", "p90", "p99")]


def test_the_dashboard_shows_functions_queues_watchdog_api_and_alarms(on) -> None:
    pipeline, resources = on
    body = dashboard_body(resources)
    charts = graphs(body)
    functions = {f"<{lid}>" for lid, f in of_type(resources, "AWS::Lambda::Function").items()
                 if f["Properties"].get("Environment", {}).get("Variables", {}).get("POWERTOOLS_SERVICE_NAME")}
    assert len(functions) == 4
    for title, name, stat in (("Function errors", "Errors", "Sum"), ("Function throttles", "Throttles", "Sum"),
                              ("Function duration (p90)", "Duration", "p90")):
        lines = [emf_metric(m) for m in charts[title]]
        assert {(ns, n, s) for ns, n, _, s in lines} == {("AWS/Lambda", name, stat)}
        assert {d["FunctionName"] for _, _, d, _ in lines} == functions
    queues = [emf_metric(m) for m in charts["Dead-letter depth"]]
    assert {n for _, n, _, _ in queues} == {"ApproximateNumberOfMessagesVisible"} and len(queues) == 3
    watchdog = [emf_metric(m)[:2] for m in charts["Watchdog"]]
    assert watchdog == [(pipeline.metrics_namespace, "WatchdogTimeouts"), ("AWS/States", "ExecutionsFailed")]
    assert [emf_metric(m)[1] for m in charts["API errors"]] == ["4XXError", "5XXError"]
    assert [emf_metric(m)[1::2] for m in charts["API latency (p50, p90, p99)"]] == [
        ("Latency", "p50"), ("Latency", "p90"), ("Latency", "p99")]
    (alarms,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    alarm_ids = {f"<{lid}.Arn>" for lid in of_type(resources, "AWS::CloudWatch::Alarm")}
    assert set(alarms["properties"]["alarms"]) == alarm_ids and len(alarm_ids) == len(pipeline.alarms)


def test_the_engine_functions_write_their_metrics_where_the_dashboard_reads(on) -> None:
    pipeline, resources = on
    envs = {f["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]: f["Properties"]["Environment"]
            ["Variables"] for f in of_type(resources, "AWS::Lambda::Function").values()
            if "POWERTOOLS_SERVICE_NAME" in f["Properties"].get("Environment", {}).get("Variables", {})}
    assert metrics.SERVICE in envs  # the service dimension the dashboard names is the orchestrator's own
    for service in ("iac-ci-intake", "iac-ci-packaging", "iac-ci-orchestrator"):
        assert envs[service][metrics.NAMESPACE_ENV] == pipeline.metrics_namespace
    assert metrics.NAMESPACE_ENV not in envs["iac-ci-worker"]


def test_metric_timing_names_only_the_timings(on) -> None:
    pipeline, _ = on
    monitoring = pipeline.node.find_child("Monitoring")
    with pytest.raises(ValueError, match="'OrdersFinished' is not one of QueueWait"):
        monitoring.metric_timing(metrics.ORDERS_FINISHED)


def test_no_dashboard_when_turned_off(off) -> None:
    pipeline, _, resources = off
    assert pipeline.dashboard is None and not of_type(resources, "AWS::CloudWatch::Dashboard")
    assert of_type(resources, "AWS::CloudWatch::Alarm")  # the alarms stay


# ---- tracing -------------------------------------------------------------------------------------
def xray_actions(resources: dict[str, Any]) -> set[str]:
    found = set()
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            found |= {a for a in actions if a.startswith("xray:")}
    return found


def test_every_function_the_watchdog_and_the_stage_are_traced(on) -> None:
    _, resources = on
    fns = of_type(resources, "AWS::Lambda::Function")
    ours = [f for f in fns.values()
            if "POWERTOOLS_SERVICE_NAME" in f["Properties"].get("Environment", {}).get("Variables", {})]
    assert len(ours) == 4 and all(f["Properties"]["TracingConfig"] == {"Mode": "Active"} for f in ours)
    assert all("POWERTOOLS_TRACE_DISABLED" not in f["Properties"]["Environment"]["Variables"] for f in ours)
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["TracingEnabled"] is True
    assert {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= xray_actions(resources)


def test_tracing_off_traces_nothing_and_grants_no_xray(off) -> None:
    _, _, resources = off
    fns = of_type(resources, "AWS::Lambda::Function")
    ours = [f for f in fns.values()
            if "POWERTOOLS_SERVICE_NAME" in f["Properties"].get("Environment", {}).get("Variables", {})]
    assert len(ours) == 4 and not any("TracingConfig" in f["Properties"] for f in ours)
    assert all(f["Properties"]["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true" for f in ours)
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    assert machine["Properties"].get("TracingConfiguration", {"Enabled": False}) == {"Enabled": False}
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    assert not stage["Properties"].get("TracingEnabled", False)
    assert xray_actions(resources) == set()


def test_turned_off_it_stays_nag_clean(off) -> None:
    """(cfn-lint runs on the default and the full configuration, dashboard included: test_construct_nag)"""
    _, stack, _ = off
    findings = Annotations.from_stack(stack)
    errors = findings.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    warnings = findings.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert [f"{e.id}: {e.entry.data}" for e in [*errors, *warnings]] == []


@pytest.mark.parametrize("prop", ["dashboard", "tracing"])
def test_a_flag_that_is_not_a_bool_is_refused_naming_it(prop: str) -> None:
    assert IacCiPipelineProps(**{prop: "yes"}).problems() == [f"{prop} must be True or False, got 'yes'"]
