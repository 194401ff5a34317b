"""The JSON Schema of ``.iac-ci.yml`` (``github.repo_config_schema``) against the parser it is built
from: every key the parser reads is in it, every shape the parser takes it takes (shorthands and
coerced scalars included), the shapes the parser refuses it refuses, and every ``.iac-ci.yml`` this
repository ships (examples, README) validates with the ``jsonschema`` library."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from support.paths import REPO_ROOT

from iac_ci.cli.main import main
from lambda_runtime.github import repo_config, repo_config_schema
from lambda_runtime.job import yaml_text
from lambda_runtime.job.model import Job
from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job
from lambda_runtime.pipelines.triggers import On

SCHEMA = repo_config_schema.build()
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
DEFS = SCHEMA["definitions"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def parser_problems(text: str) -> list[str]:
    """What the engine says of the file: ``iac-ci validate --repo-config``'s checks."""
    config, problems = repo_config.parse(text)
    jobs, more = repo_config.jobs_of(config, "acme/infra")
    out = [str(p) for p in problems + more]
    for job in jobs:
        try:
            parse_job({**job.config, "name": job.name},
                      ValidationPolicy(check_rules=False, followed=repo_config.followed(job, jobs)))
        except JobValidationError as exc:
            out += [str(p) for p in exc.problems]
    return out


def schema_errors(text: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(yaml_text.load(text))]


def shipped_configs() -> list[tuple[str, str]]:
    """Every ``.iac-ci.yml`` of ``examples/``, and every README block that is one (its first line
    says so)."""
    out = [(str(p.relative_to(REPO_ROOT)), p.read_text(encoding="utf-8"))
           for p in sorted((REPO_ROOT / "examples").rglob(".iac-ci.yml"))]
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [body for lang, body in FENCE.findall(readme) if lang == "yaml" and body.startswith("# .iac-ci.yml")]
    out += [(f"README.md block {i}", body) for i, body in enumerate(blocks, 1)]
    return out


# ---- one source of truth -----------------------------------------------------------------------
def test_every_key_the_parser_reads_is_in_the_schema() -> None:
    assert list(SCHEMA["properties"]) == list(repo_config.CONFIG_KEYS)
    assert set(DEFS["RepoJob"]["properties"]) == set(repo_config.JOB_KEYS) - {"name"}
    assert set(DEFS["On"]["properties"]) == set(On.model_fields)
    assert SCHEMA["additionalProperties"] is False and DEFS["RepoJob"]["additionalProperties"] is False


def test_every_model_in_the_schema_has_all_its_fields_but_those_iac_ci_sets() -> None:
    models = repo_config_schema.models_in(SCHEMA)
    assert {m.__name__ for m in models} >= {"Order", "When", "Param", "On", "PushTrigger", "AfterTrigger",
                                            "Schedule", "GitSpec", "InputRef", "SsmSecret"}
    for model in models:
        fields = {f.alias or name for name, f in model.model_fields.items()}
        left_out = set(repo_config_schema.SET_BY_IAC_CI.get(model.__name__, ()))
        assert set(DEFS[model.__name__]["properties"]) == fields - left_out, model.__name__
        assert DEFS[model.__name__]["additionalProperties"] is False, model.__name__  # typos are errors


def _before_validators(model: type[BaseModel], fields: set[str]) -> set[tuple[str, str | None]]:
    decorators = model.__pydantic_decorators__
    out: set[tuple[str, str | None]] = {(model.__name__, None) for d in decorators.model_validators.values()
                                        if d.info.mode == "before"}
    out |= {(model.__name__, f) for d in decorators.field_validators.values() if d.info.mode == "before"
            for f in d.info.fields if f in fields}
    return out


def test_every_validator_that_runs_before_a_model_is_accounted_for() -> None:
    """A ``mode="before"`` validator accepts input its model's own schema does not show; each one
    of a field in the schema must have its entry in ``COERCIONS``, or the schema would refuse
    documents the engine takes."""
    found = _before_validators(Job, set(repo_config.JOB_KEYS))
    for model in repo_config_schema.models_in(SCHEMA):
        found |= _before_validators(model, set(DEFS[model.__name__]["properties"]))
    assert found == set(repo_config_schema.COERCIONS)


def test_fields_left_out_are_refused_from_an_author_by_the_parser() -> None:
    text = "orders:\n  - {name: plan, cmds: [terraform plan], group: plan}\n"
    assert any("group" in p for p in parser_problems(text))
    assert any("'group' was unexpected" in e for e in schema_errors(text))


def test_bare_triggers_are_those_on_takes_alone() -> None:
    assert repo_config_schema.bare_triggers() == ["pull_request", "push"]
    for name in ("schedule", "after"):  # they need settings: a cron, a job
        assert any("on" in p for p in parser_problems(f"on: [{name}]\norders: [{{name: a, cmds: [x]}}]\n"))
        assert schema_errors(f"on: [{name}]\norders: [{{name: a, cmds: [x]}}]\n")


# ---- the same answers as the parser ------------------------------------------------------------
ACCEPTED = {
    "a plan order": "orders:\n  - {name: plan, dir: infra, cmds: [terraform plan], artifacts: [tfplan]}\n",
    "on as one name": "on: push\norders: [{name: a, cmds: [x]}]\n",
    "on as a list": "on: [push, pull_request]\norders: [{name: a, cmds: [x]}]\n",
    "a trigger with no settings": "on: {push: , pull_request: }\norders: [{name: a, cmds: [x]}]\n",
    "after as one mapping": "jobs:\n  build: {on: push, orders: [{name: a, cmds: [x]}]}\n"
                            "  deploy: {on: {after: {job: build}}, orders: [{name: b, cmds: [y]}]}\n",
    "matrix values as numbers and booleans": "orders:\n  - {name: t, cmds: [x], "
                                             "matrix: {py: [3.11, 3], debug: [true]}}\n",
    "parameter values as numbers": "params: {size: {type: number, default: 3, allowed: [1, 3, 5]}}\n"
                                   "orders: [{name: a, cmds: [x]}]\n",
    "a boolean parameter": "params: {dry: {type: boolean, default: false}}\norders: [{name: a, cmds: [x]}]\n",
    "a lock turned off": "orders: [{name: a, dir: infra, lock: false, cmds: [x]}]\n",
    "a schedule": "on: {schedule: [{cron: '0 6 * * 1'}]}\norders: [{name: a, drift: true, cmds: [x]}]\n",
    "secrets of both kinds": "orders:\n  - name: a\n    cmds: [x]\n    secrets: [{env: A, ssm: /iac-ci/a}, "
                             "{env: B, secret: iac-ci/s, key: k}]\n",
}

REFUSED = {
    "a typo in an order": "orders: [{name: a, cmds: [x], depends-on: [b]}]\n",
    "a typo at the top": "order: [{name: a, cmds: [x]}]\n",
    "jobs and orders both": "jobs: {a: {on: push, orders: [{name: a, cmds: [x]}]}}\norders: [{name: b, cmds: [y]}]\n",
    "a job without on": "jobs: {a: {orders: [{name: a, cmds: [x]}]}}\n",
    "a bad job name": "jobs: {Deploy_Prod: {on: push, orders: [{name: a, cmds: [x]}]}}\n",
    "no orders": "name: infra\n",
    "a timeout as text": "orders: [{name: a, cmds: [x], timeout: '600'}]\n",
    "an unknown trigger": "on: [merge]\norders: [{name: a, cmds: [x]}]\n",
    "an unknown event": "orders: [{name: a, cmds: [x], when: {events: [pushed]}}]\n",
    "a lock turned on": "orders: [{name: a, cmds: [x], lock: true}]\n",
    "a source of two kinds": "orders: [{name: a, cmds: [x], source: {s3: 's3://bucket/k.zip', path: .}}]\n",
}


@pytest.mark.parametrize("text", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_the_parser_takes_the_schema_takes(text: str) -> None:
    assert parser_problems(text) == []
    assert schema_errors(text) == []


@pytest.mark.parametrize("text", REFUSED.values(), ids=REFUSED.keys())
def test_shapes_the_parser_refuses_the_schema_refuses(text: str) -> None:
    assert parser_problems(text)
    assert schema_errors(text)


@pytest.mark.parametrize(("where", "text"), shipped_configs(), ids=[w for w, _ in shipped_configs()])
def test_every_shipped_config_validates_against_the_schema(where: str, text: str) -> None:
    assert schema_errors(text) == []


def test_the_shipped_configs_are_found() -> None:
    names = [w for w, _ in shipped_configs()]
    assert "examples/terraform-pr/.iac-ci.yml" in names
    assert sum(n.startswith("examples/") for n in names) >= 6 and sum(n.startswith("README") for n in names) >= 5


# ---- the document itself -----------------------------------------------------------------------
def _nodes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in _nodes(v))]
    if isinstance(node, list):
        return [n for v in node for n in _nodes(v)]
    return []


def test_it_is_a_valid_draft_07_schema_editors_read_whole() -> None:
    """Draft-07 is what the YAML language server supports fully; there, keywords next to a
    ``$ref`` are ignored, so none may carry meaning."""
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#" and "$defs" not in SCHEMA
    refs = [n for n in _nodes(SCHEMA) if "$ref" in n]
    assert refs and all(set(n) == {"$ref"} for n in refs)
    assert {n["$ref"].removeprefix("#/definitions/") for n in refs} == set(DEFS)  # all used, all there
    assert not {"Context", "PlanRun", "Upstream"} & set(DEFS)  # only iac-ci sets those


def test_iac_ci_schema_repo_config_prints_it() -> None:
    result = CliRunner().invoke(main, ["schema", "--repo-config"])
    assert result.exit_code == 0
    assert result.output == repo_config_schema.text()
    plain = CliRunner().invoke(main, ["schema"])  # the job file's, as before
    assert plain.exit_code == 0 and '"title": "Job"' in plain.output and "RepoJob" not in plain.output


def test_the_schema_file_iac_ci_writes_is_the_printed_one(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text('terraform {\n  backend "s3" {}\n}\n')
    result = CliRunner().invoke(main, ["init", str(tmp_path), "--repo", "acme/infra"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".iac-ci.schema.json").read_text(encoding="utf-8") == repo_config_schema.text()
