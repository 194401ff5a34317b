"""Run parameters: their definitions (``Param``), the values a run is given, the problems validation
names (``params.<name>`` / ``param_values.<name>``) and the environment the orders see."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lambda_runtime.job.model import Param
from lambda_runtime.job.validate import JobValidationError, parse_job

EVIL = "$(touch /tmp/x); rm -rf /"


def job(params: dict[str, Any], values: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
        order_env: dict[str, str] | None = None) -> dict[str, Any]:
    order: dict[str, Any] = {"name": "deploy", "cmds": ['./deploy --region "$region"']}
    if order_env:
        order["env"] = order_env
    raw: dict[str, Any] = {"name": "demo", "params": params, "orders": [order]}
    if values is not None:
        raw["param_values"] = values
    if env:
        raw["env"] = env
    return raw


def problems(raw: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    with pytest.raises(JobValidationError) as info:
        parse_job(raw)
    return [(p.order, p.field, p.message) for p in info.value.problems]


# ---- one parameter ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("spec", "value", "problem"),
    [
        ({}, "anything at all", None),
        ({}, EVIL, None),
        ({}, "", None),
        ({}, "a\x00b", "must not contain NUL"),
        ({"type": "boolean"}, "true", None),
        ({"type": "boolean"}, "false", None),
        ({"type": "boolean"}, "yes", "'yes' is not a boolean (true or false)"),
        ({"type": "boolean"}, "True", "'True' is not a boolean (true or false)"),
        ({"type": "number"}, "42", None),
        ({"type": "number"}, "-2.5", None),
        ({"type": "number"}, "1e3", "'1e3' is not a number"),
        ({"type": "number"}, "4; rm -rf /", "'4; rm -rf /' is not a number"),
        ({"type": "number"}, ".5", "'.5' is not a number"),
        ({"allowed": ["dev", "prd"]}, "prd", None),
        ({"allowed": ["dev", "prd"]}, "stg", "'stg' is not allowed (allowed: dev, prd)"),
        ({"type": "number", "allowed": [1, 2]}, "2", None),
        ({"type": "boolean"}, "x" * 61, f"'{'x' * 60}…' is not a boolean (true or false)"),
    ],
    ids=["free text", "shell metacharacters", "empty", "NUL", "true", "false", "yes", "True", "integer",
         "negative decimal", "exponent", "number then command", "leading dot", "allowed", "not allowed",
         "allowed numbers", "long value shortened"],
)
def test_value_problems(spec: dict[str, Any], value: str, problem: str | None) -> None:
    assert Param(**spec).problem(value) == problem


@pytest.mark.parametrize(
    ("spec", "default", "allowed"),
    [
        ({"type": "boolean", "default": True}, "true", None),
        ({"type": "boolean", "default": False}, "false", None),
        ({"type": "number", "default": 3}, "3", None),
        ({"type": "number", "default": 2.5}, "2.5", None),
        ({"type": "number", "default": 3, "allowed": [1, 2, 3]}, "3", ["1", "2", "3"]),
        ({"type": "boolean", "default": "true", "allowed": [True]}, "true", ["true"]),
        ({"default": "eu-west-1"}, "eu-west-1", None),
        ({}, None, None),
    ],
)
def test_yaml_scalars_become_text(spec: dict[str, Any], default: str | None, allowed: list[str] | None) -> None:
    param = Param(**spec)
    assert param.default == default and param.allowed == allowed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "number", "default": "abc"}, "default: 'abc' is not a number"),
        ({"type": "boolean", "default": "maybe"}, "default: 'maybe' is not a boolean (true or false)"),
        ({"allowed": ["dev"], "default": "prd"}, "default: 'prd' is not allowed (allowed: dev)"),
        ({"type": "number", "allowed": ["one"]}, "allowed: 'one' is not a number"),
    ],
)
def test_a_definition_that_contradicts_itself(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Param(**spec)
    assert message in str(info.value)
    assert problems(job({"p": spec})) == [(None, "params.p", message)]


# ---- the job's parameters -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (job({"region": {"default": "eu"}}, {"regoin": "x"}),
         [(None, "param_values.regoin", "unknown parameter (parameters: region)")]),
        (job({}, {"x": "1"}), [(None, "param_values.x", "unknown parameter (parameters: none)")]),
        (job({"n": {"type": "number", "default": 3}}, {"n": "abc"}), [(None, "params.n", "'abc' is not a number")]),
        (job({"b": {"type": "boolean", "default": True}}, {"b": "yes"}),
         [(None, "params.b", "'yes' is not a boolean (true or false)")]),
        (job({"env": {"allowed": ["dev", "prd"], "default": "dev"}}, {"env": "stg"}),
         [(None, "params.env", "'stg' is not allowed (allowed: dev, prd)")]),
        (job({"env": {"allowed": ["dev", "prd"]}}, {"env": EVIL}),
         [(None, "params.env", f"'{EVIL}' is not allowed (allowed: dev, prd)")]),
        (job({"version": {}}), [(None, "params.version", "needs a value (-p version=VALUE)")]),
        (job({"s": {}}, {"s": "a\x00b"}), [(None, "params.s", "must not contain NUL")]),
        (job({"region": {"default": "x"}}, env={"region": "y"}),
         [(None, "params.region", "is also set in env: a parameter is the variable of its name")]),
        (job({"region": {"default": "x"}}, order_env={"region": "y"}),
         [("deploy", "env.region", "is a parameter of the job: a parameter is the variable of its name")]),
        (job({"bad-name": {"default": "x"}}),
         [(None, "params.bad-name.[key]", "String should match pattern '^[A-Za-z_][A-Za-z0-9_]{0,63}$'")]),
        (job({"n": {"type": "integer"}}), [(None, "params.n.type", "Input should be 'string', 'boolean' or 'number'")]),
        (job({"s": {"default": "x"}}, {"s": "y" * 4097}),
         [(None, "param_values.s", "String should have at most 4096 characters")]),
    ],
    ids=["unknown value key", "unknown, no parameters", "not a number", "not a boolean", "not allowed",
         "metacharacters not allowed", "required missing", "NUL", "collides with job env", "collides with order env",
         "bad name", "bad type", "too long"],
)
def test_parameter_problems(raw: dict[str, Any], expected: list[tuple[str | None, str, str]]) -> None:
    assert problems(raw) == expected


@pytest.mark.parametrize("name", ["PATH", "HOME", "TMPDIR", "LANG", "AWS_REGION", "aws_profile", "IAC_CI_REPO",
                                  "iac_ci_x"])
def test_reserved_names(name: str) -> None:
    assert problems(job({name: {"default": "x"}})) == [
        (None, f"params.{name}", "is a variable iac-ci or the shell sets itself")]


@pytest.mark.parametrize("name", ["path", "home", "LANGUAGE", "AWSX", "IAC_CIX", "region"])
def test_names_that_are_not_reserved(name: str) -> None:
    assert parse_job(job({name: {"default": "x"}})).param_env() == {name: "x"}


def test_every_problem_at_once() -> None:
    raw = job({"PATH": {"default": "x"}, "version": {}, "n": {"type": "number", "default": 1}}, {"n": "x", "zz": "1"})
    assert problems(raw) == [
        (None, "params.n", "'x' is not a number"),
        (None, "param_values.zz", "unknown parameter (parameters: PATH, n, version)"),
        (None, "params.PATH", "is a variable iac-ci or the shell sets itself"),
        (None, "params.version", "needs a value (-p version=VALUE)"),
    ]


# ---- what the orders see ----------------------------------------------------------------------------

def test_param_env_takes_the_given_value_else_the_default_as_text() -> None:
    parsed = parse_job(job(
        {"region": {"default": "eu-west-1"}, "dry_run": {"type": "boolean", "default": False},
         "replicas": {"type": "number", "default": 2}, "version": {}},
        {"replicas": 5, "dry_run": True, "version": "1.2.3"},
    ))
    assert parsed.param_values == {"replicas": "5", "dry_run": "true", "version": "1.2.3"}
    assert parsed.param_env() == {"region": "eu-west-1", "dry_run": "true", "replicas": "5", "version": "1.2.3"}


def test_no_parameters_no_environment() -> None:
    assert parse_job(job({})).param_env() == {}


@pytest.mark.parametrize("value", [EVIL, "`id`", "a\nb", "'; DROP TABLE x; --", "${HOME}", "--force", "*"])
def test_shell_metacharacters_are_accepted_and_kept_verbatim(value: str) -> None:
    parsed = parse_job(job({"region": {}}, {"region": value}))
    assert parsed.param_env() == {"region": value}
    # the value is never written into a command: the commands are the author's text
    assert parsed.orders[0].cmds == ['./deploy --region "$region"']


def test_a_default_with_metacharacters_is_kept_verbatim() -> None:
    assert parse_job(job({"region": {"default": EVIL}})).param_env() == {"region": EVIL}
