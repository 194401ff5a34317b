"""Bounds a deployment sets on itself: reserved concurrency of the engine functions (a job with
thousands of Lambda orders cannot starve intake or the orchestrator), an optional cap on workers
and CodeBuild builds, and the source size caps handed to the packaging function."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from iac_ci_constructs import IacCiPipeline, IacCiPipelineProps, IacCiPipelinePropsError
from iac_ci_constructs.engine import _event_source_concurrency
from lambda_runtime.settings import Settings

MiB = 1024 * 1024


def synth(**props: Any) -> tuple[Stack, IacCiPipeline, dict[str, Any]]:
    stack = Stack(App(), "Bounds")
    pipeline = IacCiPipeline(stack, "IacCi", **props)
    return stack, pipeline, Template.from_stack(stack).to_json()["Resources"]


def function_properties(built: tuple[Stack, IacCiPipeline, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    stack, pipeline, resources = built
    functions = {"intake": pipeline.intake_function, "packaging": pipeline.packaging_function,
                 "orchestrator": pipeline.orchestrator_function, "worker": pipeline.worker_function}
    return {name: resources[stack.resolve(fn.node.default_child.logical_id)]["Properties"]  # type: ignore[union-attr]
            for name, fn in functions.items()}


def event_sources(built: tuple[Stack, IacCiPipeline, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The SQS event source mapping of each consumer, by function name."""
    stack, pipeline, resources = built
    ids = {stack.resolve(fn.node.default_child.logical_id): name  # type: ignore[union-attr]
           for name, fn in (("packaging", pipeline.packaging_function),
                            ("orchestrator", pipeline.orchestrator_function))}
    return {ids[r["Properties"]["FunctionName"]["Ref"]]: r["Properties"] for r in resources.values()
            if r["Type"] == "AWS::Lambda::EventSourceMapping"}


def project(resources: dict[str, Any]) -> dict[str, Any]:
    [properties] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CodeBuild::Project"]
    return properties


@pytest.fixture(scope="module")
def default() -> tuple[Stack, IacCiPipeline, dict[str, Any]]:
    return synth()


@pytest.fixture(scope="module")
def custom() -> tuple[Stack, IacCiPipeline, dict[str, Any]]:
    return synth(intake_reserved_concurrency=None, orchestrator_reserved_concurrency=3,
                 worker_reserved_concurrency=50, max_running_per_run=4, max_running_per_deployment=40,
                 max_source_bytes=64 * MiB, max_source_files=1_000)


# ---- reserved concurrency and build limits -----------------------------------------------------
def test_intake_and_orchestrator_are_reserved_by_default_and_workers_are_not(default) -> None:
    functions = function_properties(default)
    assert {n: p.get("ReservedConcurrentExecutions") for n, p in functions.items()} == {
        "intake": 20, "packaging": None, "orchestrator": 10, "worker": None}
    assert "ConcurrentBuildLimit" not in project(default[2])


def test_the_orchestrator_queue_never_invokes_past_the_reservation(default) -> None:
    mappings = event_sources(default)
    assert mappings["orchestrator"]["ScalingConfig"] == {"MaximumConcurrency": 10}
    assert "ScalingConfig" not in mappings["packaging"]


def test_caps_on_workers_and_runs_and_no_reservation_when_none(custom) -> None:
    functions = function_properties(custom)
    assert {n: p.get("ReservedConcurrentExecutions") for n, p in functions.items()} == {
        "intake": None, "packaging": None, "orchestrator": 3, "worker": 50}
    assert "ConcurrentBuildLimit" not in project(custom[2])  # the engine queues; a project limit would fail builds
    env = functions["orchestrator"]["Environment"]["Variables"]
    assert (env["IAC_CI_MAX_RUNNING_PER_RUN"], env["IAC_CI_MAX_RUNNING_PER_DEPLOYMENT"]) == ("4", "40")
    assert event_sources(custom)["orchestrator"]["ScalingConfig"] == {"MaximumConcurrency": 3}


def test_the_event_source_concurrency_stays_within_what_sqs_accepts() -> None:
    assert [_event_source_concurrency(r) for r in (None, 2, 10, 1000, 5000)] == [None, 2, 10, 1000, 1000]


# ---- source caps reach the packaging function --------------------------------------------------
def test_source_caps_default_to_the_runtime_defaults(default) -> None:
    env = function_properties(default)["packaging"]["Environment"]["Variables"]
    assert env["IAC_CI_MAX_SOURCE_BYTES"] == str(512 * MiB) and env["IAC_CI_MAX_SOURCE_FILES"] == "100000"
    props, fields = IacCiPipelineProps(), Settings.model_fields
    assert props.max_source_bytes == fields["max_source_bytes"].default
    assert props.max_source_files == fields["max_source_files"].default


def test_source_caps_land_in_every_engine_functions_settings(custom) -> None:
    functions = function_properties(custom)
    for name in ("intake", "packaging", "orchestrator"):
        env = functions[name]["Environment"]["Variables"]
        assert (env["IAC_CI_MAX_SOURCE_BYTES"], env["IAC_CI_MAX_SOURCE_FILES"]) == (str(64 * MiB), "1000"), name
    settings = custom[1].settings
    assert (settings.max_source_bytes, settings.max_source_files) == (64 * MiB, 1_000)


# ---- invalid values, each naming its property ----------------------------------------------------
def problems(**props: Any) -> list[str]:
    stack = Stack(App(), "S")
    with pytest.raises(IacCiPipelinePropsError) as err:
        IacCiPipeline(stack, "IacCi", **props)
    assert stack.node.find_child("IacCi").node.children == []  # refused before anything was built
    return list(err.value.problems)


@pytest.mark.parametrize(("prop", "value", "message"), [
    ("intake_reserved_concurrency", 0, "intake_reserved_concurrency must be at least 1, got 0"),
    ("intake_reserved_concurrency", "10", "intake_reserved_concurrency must be an integer or None, got '10'"),
    ("orchestrator_reserved_concurrency", 1,
     "orchestrator_reserved_concurrency must be at least 2, got 1 (the least an SQS event source's "
     "MaximumConcurrency accepts)"),
    ("worker_reserved_concurrency", -5, "worker_reserved_concurrency must be at least 1, got -5"),
    ("worker_reserved_concurrency", True, "worker_reserved_concurrency must be an integer or None, got True"),
    ("max_running_per_run", 0, "max_running_per_run must be at least 1, got 0"),
    ("max_running_per_deployment", 2.5, "max_running_per_deployment must be an integer or None, got 2.5"),
    ("max_source_bytes", 0, "max_source_bytes must be between 1 and 1073741824, got 0"),
    ("max_source_bytes", 2048 * MiB, "max_source_bytes must be between 1 and 1073741824, got 2147483648"),
    ("max_source_bytes", None, "max_source_bytes must be an integer, got None"),
    ("max_source_files", 0, "max_source_files must be at least 1, got 0"),
])
def test_invalid_bounds_are_refused_naming_the_property(prop: str, value: Any, message: str) -> None:
    assert problems(**{prop: value}) == [message]


def test_every_invalid_bound_is_reported_at_once() -> None:
    found = problems(intake_reserved_concurrency=0, orchestrator_reserved_concurrency=0,
                     worker_reserved_concurrency=0, max_running_per_deployment=0, max_source_bytes=0,
                     max_source_files=0)
    assert [p.split()[0] for p in found] == [
        "max_source_bytes", "max_source_files", "intake_reserved_concurrency", "orchestrator_reserved_concurrency",
        "worker_reserved_concurrency", "max_running_per_deployment"]
