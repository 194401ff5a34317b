"""Every validation rule of the job file, each asserting the order and field it names."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job, secret_name

BASE: dict[str, Any] = {
    "name": "demo",
    "orders": [
        {"name": "build", "cmds": ["make"], "artifacts": ["dist"]},
        {
            "name": "deploy",
            "cmds": ["./deploy"],
            "depends_on": ["build"],
            "inputs": [{"from": "build", "path": "dist"}],
        },
    ],
}


def problems(job: dict[str, Any], policy: ValidationPolicy | None = None) -> list[tuple[str | None, str, str]]:
    with pytest.raises(JobValidationError) as info:
        parse_job(job, policy)
    return [(p.order, p.field, p.message) for p in info.value.problems]


def mutate(**changes: Any) -> dict[str, Any]:
    job = copy.deepcopy(BASE)
    for idx, patch in changes.get("orders", {}).items():
        job["orders"][idx].update(patch)
    job.update({k: v for k, v in changes.items() if k != "orders"})
    return job


def test_valid_job_parses_with_defaults() -> None:
    job = parse_job(BASE)
    deploy = job.order("deploy")
    assert deploy.target == "codebuild" and deploy.timeout == 600 and deploy.must_succeed is True
    assert job.timeout == 21600


def test_not_a_mapping() -> None:
    assert problems([1, 2]) == [(None, "", "a job must be a mapping with 'name' and 'orders'")]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Demo", "-x", "a" * 64, "a_b"])
def test_bad_job_name(name: str) -> None:
    assert problems(mutate(name=name))[0][:2] == (None, "name")


def test_unknown_fields_are_errors() -> None:
    found = problems(mutate(colour="red", orders={0: {"depends-on": ["x"]}}))
    assert (None, "colour", "unknown field") in found
    assert ("build", "depends-on", "unknown field") in found


def test_types_are_strict() -> None:
    found = problems(mutate(orders={0: {"timeout": "60", "must_succeed": "yes", "cmds": "make"}}))
    fields = {(o, f) for o, f, _ in found}
    assert {("build", "timeout"), ("build", "must_succeed"), ("build", "cmds")} <= fields


def test_empty_cmds_and_missing_fields() -> None:
    found = problems({"name": "x", "orders": [{"name": "a", "cmds": []}, {"cmds": ["x"]}]})
    assert ("a", "cmds") in {(o, f) for o, f, _ in found}
    assert ("#2", "name") in {(o, f) for o, f, _ in found}


def test_duplicate_names() -> None:
    job = mutate()
    job["orders"].append({"name": "build", "cmds": ["x"]})
    assert ("build", "name", "duplicate order name (used 2 times)") in problems(job)


def test_unknown_dependency_and_self_dependency() -> None:
    found = problems(mutate(orders={1: {"depends_on": ["build", "deploy", "nope"]}}))
    assert ("deploy", "depends_on", "an order cannot depend on itself") in found
    assert ("deploy", "depends_on", "unknown order 'nope'") in found


def test_cycle_is_named() -> None:
    job = {
        "name": "c",
        "orders": [
            {"name": "a", "cmds": ["x"], "depends_on": ["c"]},
            {"name": "b", "cmds": ["x"], "depends_on": ["a"]},
            {"name": "c", "cmds": ["x"], "depends_on": ["b"]},
            {"name": "d", "cmds": ["x"], "depends_on": ["a"]},
        ],
    }
    found = problems(job)
    assert ("a", "depends_on", "dependency cycle: a -> c -> b -> a") in found
    assert len([p for p in found if "cycle" in p[2]]) == 1


def test_inputs_must_come_from_a_transitive_dependency_artifact() -> None:
    job = {
        "name": "i",
        "orders": [
            {"name": "a", "cmds": ["x"], "artifacts": ["out"]},
            {"name": "b", "cmds": ["x"], "depends_on": ["a"]},
            {"name": "c", "cmds": ["x"], "depends_on": ["b"], "inputs": [{"from": "a", "path": "out/file"}]},
            {"name": "d", "cmds": ["x"], "inputs": [{"from": "a", "path": "out"}]},
            {"name": "e", "cmds": ["x"], "depends_on": ["a"], "inputs": [{"from": "a", "path": "other"}]},
        ],
    }
    found = problems(job)
    assert ("d", "inputs[0].from", "'a' is not among this order's dependencies") in found
    assert ("e", "inputs[0].path", "'other' is not an artifact of order 'a'") in found
    assert not [p for p in found if p[0] == "c"]  # transitive dependency, path under an artifact: fine


@pytest.mark.parametrize(
    "target,timeout,ok",
    [
        ("lambda", 900, True),
        ("lambda", 901, False),
        ("codebuild", 28800, True),
        ("codebuild", 28801, False),
        ("codebuild", 0, False),
    ],
)
def test_timeouts(target: str, timeout: int, ok: bool) -> None:
    job = mutate(orders={0: {"target": target, "timeout": timeout}})
    if ok:
        parse_job(job)
    else:
        assert problems(job)[0][:2] == ("build", "timeout")


@pytest.mark.parametrize(
    "field,value",
    [("dir", "../x"), ("dir", "/etc"), ("dir", "a/../../b"), ("artifacts", ["/abs"]), ("artifacts", ["x/../.."])],
)
def test_bad_paths(field: str, value: Any) -> None:
    found = problems(mutate(orders={0: {field: value}}))
    assert found[0][0] == "build" and found[0][1].startswith(field)


def test_secret_references_outside_allowed_prefixes() -> None:
    job = mutate(
        orders={
            0: {
                "secrets": [
                    {"env": "OK", "ssm": "/iac-ci/db"},
                    {"env": "BAD", "ssm": "/prod/db"},
                    {"env": "SM", "secret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:other/x-AbCdEf"},
                ]
            }
        }
    )
    found = problems(job)
    assert [(o, f) for o, f, _ in found] == [("build", "secrets[1]"), ("build", "secrets[2]")]
    assert "is not granted by environment 'default' (it grants: /iac-ci/)" in found[0][2]


def test_secret_arn_name_is_checked_without_suffix() -> None:
    assert secret_name("arn:aws:secretsmanager:us-east-1:1:secret:iac-ci/x-AbCdEf") == "iac-ci/x"
    parse_job(
        mutate(
            orders={
                0: {
                    "secrets": [
                        {
                            "env": "A",
                            "secret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:iac-ci/x-AbCdEf",
                            "key": "k",
                        }
                    ]
                }
            }
        )
    )


def test_role_must_be_allowed() -> None:
    role = "arn:aws:iam::111111111111:role/deployer"
    assert problems(mutate(orders={0: {"aws_role": role}}))[0][:2] == ("build", "aws_role")
    parse_job(
        mutate(orders={0: {"aws_role": role}}),
        ValidationPolicy(role_arn_patterns=("arn:aws:iam::111111111111:role/*",)),
    )


def test_local_sources_only_in_embedded_mode() -> None:
    job = mutate(source={"path": "./app"}, orders={0: {"source": {"git": {"url": "file:///tmp/repo"}}}})
    found = problems(job)
    assert (None, "source.path", "local path sources are accepted in embedded mode only") in found
    assert ("build", "source.git.url", "file:// URLs are accepted in embedded mode only") in found
    parse_job(job, ValidationPolicy(allow_local_sources=True))


def test_source_shapes() -> None:
    found = problems(
        mutate(
            orders={0: {"source": {"git": {"url": "ftp://x", "ref": "--upload-pack=x"}}}, 1: {"source": {"svn": "x"}}}
        )
    )
    fields = {(o, f) for o, f, _ in found}
    assert ("build", "source.git.url") in fields and ("build", "source.git.ref") in fields
    assert ("deploy", "source") in fields


def test_all_problems_reported_at_once() -> None:
    job = {
        "name": "Bad",
        "orders": [
            {"name": "a", "cmds": ["x"], "timeout": 5000, "target": "lambda", "depends_on": ["b"]},
            {"name": "b", "cmds": ["x"], "depends_on": ["a", "ghost"], "dir": "../up"},
        ],
    }
    found = problems(job)
    kinds = {(o, f) for o, f, _ in found}
    assert {(None, "name"), ("a", "timeout"), ("b", "dir"), ("b", "depends_on"), ("a", "depends_on")} <= kinds
    assert any("cycle" in m for _, _, m in found) and any("ghost" in m for _, _, m in found)


def test_duplicate_secret_env() -> None:
    found = problems(
        mutate(orders={0: {"secrets": [{"env": "A", "ssm": "/iac-ci/a"}, {"env": "A", "ssm": "/iac-ci/b"}]}})
    )
    assert ("build", "secrets", "env A declared more than once") in found


@pytest.mark.parametrize("field,value", [("artifacts", ["."]), ("artifacts", ["./"]), ("artifacts", ["a/.."])])
def test_dot_is_not_an_artifact(field: str, value: Any) -> None:
    assert problems(mutate(orders={0: {field: value}}))[0][:2] == ("build", field)


def test_paths_are_normalised() -> None:
    job = parse_job(mutate(orders={0: {"dir": "./src/", "artifacts": ["./dist/"]}}))
    assert job.order("build").dir == "src" and job.order("build").artifacts == ["dist"]
    assert parse_job(mutate(orders={0: {"dir": "."}})).order("build").dir is None


ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf"
ENGINE_POLICY = ValidationPolicy(
    allowed_exact=frozenset({"iac-ci/github-token"}),  # even listed one by one, it stays refused
    git_token_exact=frozenset({ARN.format("iac-ci/github-token")}),
    engine_secrets=frozenset({ARN.format("iac-ci/github-token"), ARN.format("iac-ci/api-key"),
                              "iac-ci/github-webhook-secret"}),
)


@pytest.mark.parametrize(
    "ref",
    ["iac-ci/github-token", ARN.format("iac-ci/github-token"), "iac-ci/api-key", ARN.format("iac-ci/api-key"),
     "iac-ci/github-webhook-secret"],
)
def test_the_engines_own_credentials_are_never_order_secrets(ref: str) -> None:
    """Inside the allowed prefix, by name or by ARN, even on the exact list: refused, naming the order."""
    found = problems(mutate(orders={1: {"secrets": [{"env": "T", "secret": ref}]}}), ENGINE_POLICY)
    assert [(o, f) for o, f, _ in found] == [("deploy", "secrets[0]")]
    assert "one of the engine's own credentials" in found[0][2]


def test_the_deployments_github_token_is_a_git_credential_only() -> None:
    token = ARN.format("iac-ci/github-token")
    git = {"git": {"url": "https://github.com/acme/infra.git", "token": {"secret": token}}}
    parse_job(mutate(source=git), ENGINE_POLICY)  # cloning a pull request with it: fine
    found = problems(mutate(source={"git": {**git["git"], "token": {"secret": ARN.format("iac-ci/api-key")}}}),
                     ENGINE_POLICY)
    assert [(o, f) for o, f, _ in found] == [(None, "source.git.token")]


def test_settings_declare_every_engine_credential() -> None:
    from lambda_runtime.settings import Settings

    settings = Settings(orders_table="o", events_table="e", locks_table="l", idempotency_table="i",
                        internal_bucket="b", done_bucket="d", state_bucket="s", kms_key_arn="k", watchdog_arn="w",
                        webhook_secret_id="api-key", github_webhook_secret_id="gh-hook",
                        github_token_secret_id="gh-token", allowed_exact_refs=("iac-ci/ok",))
    policy = settings.validation_policy()
    assert policy.engine_secrets == {"api-key", "gh-hook", "gh-token"}
    assert policy.allowed_exact == {"iac-ci/ok"} and policy.git_token_exact == {"gh-token"}
