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
    document = as_json(yaml_text.load(text))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(document)]


def as_json(node: Any) -> Any:
    """The document as an editor checks it: JSON's keys are text, so YAML's ``9:`` is the key "9"
    (``jsonschema`` cannot match a pattern against a number)."""
    if isinstance(node, dict):
        return {str(k): as_json(v) for k, v in node.items()}
    if isinstance(node, list):
        return [as_json(v) for v in node]
    return node


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
# Each document's verdict: both accept it, both refuse it, or the parser alone refuses it for one
# of the reasons the module docstring gives (each phrase is in it), where the schema cannot see.
BOTH_ACCEPT, BOTH_REFUSE = "both accept", "both refuse"
ACROSS_FIELDS = "checks across fields"
DEPLOYMENT = "against the deployment"
RUNS_CODE = "runs code"
JSON_NUMBER = "JSON cannot tell"
ONLY_THE_PARSER = (ACROSS_FIELDS, DEPLOYMENT, RUNS_CODE, JSON_NUMBER)

A = "orders: [{name: a, cmds: [x]}]\n"  # a job's orders, after its other keys


def order(fields: str) -> str:
    """A one-order job whose order has ``fields`` besides its name and commands."""
    return f"orders: [{{name: a, cmds: [x], {fields}}}]\n"


def job(on: str = "push", more: str = "") -> str:
    """A job of ``jobs:`` with one order, answering to ``on``, with ``more`` of its keys."""
    return f"{{on: {on}, orders: [{{name: a, cmds: [x]}}]{', ' + more if more else ''}}}"


def jobs(**bodies: str) -> str:
    return "jobs: {" + ", ".join(f"{name}: {body}" for name, body in bodies.items()) + "}\n"


CASES: dict[str, tuple[str, str]] = {
    # -- both accept
    "a plan order": (BOTH_ACCEPT, order("dir: infra, artifacts: [tfplan]")),
    "no on: pull requests": (BOTH_ACCEPT, A),
    "a name": (BOTH_ACCEPT, "name: infra\n" + A),
    "a job's env and timeout": (BOTH_ACCEPT, "env: {REGION: eu-west-1}\ntimeout: 3600\n" + A),
    "on as one name": (BOTH_ACCEPT, "on: push\n" + A),
    "on as a list": (BOTH_ACCEPT, "on: [push, pull_request]\n" + A),
    "on with no trigger": (BOTH_ACCEPT, "on: {}\n" + A),
    "a trigger with no settings": (BOTH_ACCEPT, "on: {push: , pull_request: }\n" + A),
    "a pull request's base branches": (BOTH_ACCEPT, "on: {pull_request: {branches: [main]}}\n" + A),
    "a push's branches, tags and paths": (BOTH_ACCEPT, "on: {push: {branches: [main], tags: ['v*'], "
                                                       "paths: ['infra/**']}}\n" + A),
    "a schedule": (BOTH_ACCEPT, "on: {schedule: [{cron: '0 6 * * 1'}]}\n" + order("drift: true")),
    "after another repository's job": (BOTH_ACCEPT, "on: {after: [{job: build, repo: acme/api, "
                                                    "statuses: [succeeded, drifted], branches: [main]}]}\n" + A),
    "after as one mapping": (BOTH_ACCEPT, jobs(build=job(), deploy=job("{after: {job: build}}"))),
    "a job of jobs with env, timeout and params": (BOTH_ACCEPT, jobs(a=job(more="env: {A: x}, timeout: 60, "
                                                                              "params: {v: {default: x}}"))),
    "matrix values as numbers and booleans": (BOTH_ACCEPT, order("matrix: {py: [3.11, 3], debug: [true]}")),
    "a matrix without fail_fast": (BOTH_ACCEPT, order("matrix: {v: [a, b]}, fail_fast: false, must_succeed: false")),
    "a matrix instance's name": (BOTH_ACCEPT, "orders: [{name: 'a[x=1]', cmds: [x]}]\n"),
    "parameter values as numbers": (BOTH_ACCEPT, "params: {size: {type: number, default: 3, allowed: [1, 3, 5]}}\n"
                                                 + A),
    "a number parameter's default as text": (BOTH_ACCEPT, "params: {x: {type: number, default: '3'}}\n" + A),
    "a boolean parameter": (BOTH_ACCEPT, "params: {dry: {type: boolean, default: false}}\n" + A),
    "a described parameter": (BOTH_ACCEPT, "params: {r: {default: a, allowed: [a, b], description: where}}\n" + A),
    "a lock turned off": (BOTH_ACCEPT, order("dir: infra, lock: false")),
    "a lock by name": (BOTH_ACCEPT, order("lock: 'acme/x:infra'")),
    "fields left out as null": (BOTH_ACCEPT, order("when: null, dir: null, lock: null")),
    "the folder itself as dir": (BOTH_ACCEPT, order("dir: .")),
    "an order's env": (BOTH_ACCEPT, order("env: {TF_IN_AUTOMATION: '1'}")),
    "secrets of both kinds": (BOTH_ACCEPT, order("secrets: [{env: A, ssm: /iac-ci/a}, "
                                                 "{env: B, secret: iac-ci/s, key: k}]")),
    "a git source with a ref and token": (BOTH_ACCEPT, order("source: {git: {url: 'https://x/y.git', ref: main, "
                                                             "token: {ssm: /iac-ci/t}}}")),
    "when with paths and events": (BOTH_ACCEPT, order("when: {paths: ['infra/**'], events: [opened, push]}")),
    "a lambda order": (BOTH_ACCEPT, order("target: lambda, timeout: 900")),
    "a timeout with digit separators": (BOTH_ACCEPT, order("timeout: 1_800")),
    "run_if after a dependency": (BOTH_ACCEPT, "orders: [{name: a, cmds: [x]}, "
                                               "{name: b, depends_on: [a], run_if: always, cmds: [y]}]\n"),
    "an input from a dependency": (BOTH_ACCEPT, "orders: [{name: a, cmds: [x], artifacts: [out]}, {name: b, "
                                                "depends_on: [a], inputs: [{from: a, path: out}], cmds: [y]}]\n"),
    "an apply order with requirements": (BOTH_ACCEPT, "orders: [{name: plan, cmds: [x]}, {name: apply, command: apply, "
                                                      "depends_on: [plan], apply_on: merge, apply_requirements: "
                                                      "[approved, mergeable], required_reviews: 2, cmds: [y]}]\n"),
    # -- both refuse
    "a typo in an order": (BOTH_REFUSE, order("depends-on: [b]")),
    "a typo at the top": (BOTH_REFUSE, "order: [{name: a, cmds: [x]}]\n"),
    "a number as a top-level key": (BOTH_REFUSE, "1: x\n" + A),
    "no orders": (BOTH_REFUSE, "name: infra\n"),
    "a name as a number": (BOTH_REFUSE, "name: 123\n" + A),
    "a name as a list": (BOTH_REFUSE, "name: [x]\n" + A),
    "a name as null": (BOTH_REFUSE, "name: null\n" + A),
    "an empty name": (BOTH_REFUSE, "name: ''\n" + A),
    "a name with capitals": (BOTH_REFUSE, "name: Infra\n" + A),
    "a name as a number beside jobs": (BOTH_REFUSE, "name: 123\n" + jobs(a=job())),
    "jobs and orders both": (BOTH_REFUSE, jobs(a=job()) + A),
    "a top-level env beside jobs": (BOTH_REFUSE, "env: {A: x}\n" + jobs(a=job())),
    "a top-level timeout beside jobs": (BOTH_REFUSE, "timeout: 600\n" + jobs(a=job())),
    "a top-level name beside jobs": (BOTH_REFUSE, "name: infra\n" + jobs(a=job())),
    "top-level params beside jobs": (BOTH_REFUSE, "params: {region: {default: eu-west-1}}\n" + jobs(a=job())),
    "a job without on": (BOTH_REFUSE, "jobs: {a: {orders: [{name: a, cmds: [x]}]}}\n"),
    "a bad job name": (BOTH_REFUSE, jobs(Deploy_Prod=job())),
    "a name inside a job of jobs": (BOTH_REFUSE, jobs(a=job(more="name: b"))),
    "no jobs under jobs": (BOTH_REFUSE, "jobs: {}\n"),
    "jobs as null": (BOTH_REFUSE, "jobs: null\n"),
    "a job as null": (BOTH_REFUSE, "jobs: {a: null}\n"),
    "a job's timeout over 7 days": (BOTH_REFUSE, jobs(a=job(more="timeout: 99999999"))),
    "an env value as a number": (BOTH_REFUSE, "env: {A: 1}\n" + A),
    "env as null": (BOTH_REFUSE, "env: null\n" + A),
    "a job env name outside the pattern": (BOTH_REFUSE, "env: {bad-name: {nested: [1, 2]}}\n" + A),
    "a parameter name outside the pattern": (BOTH_REFUSE, "params: {bad-name: {type: nonsense}}\n" + A),
    "a job of jobs' env name outside the pattern": (BOTH_REFUSE, jobs(a=job(more="env: {bad-name: x}"))),
    "a job of jobs' parameter name outside the pattern": (BOTH_REFUSE, jobs(a=job(more="params: {bad-name: {}}"))),
    "a matrix variable outside the pattern": (BOTH_REFUSE, order("matrix: {bad-key: [{x: 1}]}")),
    "an order's env name outside the pattern": (BOTH_REFUSE, order("env: {'1BAD': x}")),
    "an order's env name as a number": (BOTH_REFUSE, order("env: {9: [1]}")),
    "an unknown parameter type": (BOTH_REFUSE, "params: {x: {type: nonsense}}\n" + A),
    "on as null": (BOTH_REFUSE, "on: null\n" + A),
    "an unknown trigger": (BOTH_REFUSE, "on: [merge]\n" + A),
    "a push's branches as text": (BOTH_REFUSE, "on: {push: {branches: main}}\n" + A),
    "a schedule as one mapping": (BOTH_REFUSE, "on: {schedule: {cron: '0 6 * * *'}}\n" + A),
    "an unknown status to follow": (BOTH_REFUSE, "on: {after: {job: a, statuses: [done]}}\n" + A),
    "commands as text": (BOTH_REFUSE, "orders: [{name: a, cmds: echo}]\n"),
    "no commands": (BOTH_REFUSE, "orders: [{name: a, cmds: []}]\n"),
    "a command as a number": (BOTH_REFUSE, "orders: [{name: a, cmds: [1]}]\n"),
    "an order name with a space": (BOTH_REFUSE, "orders: [{name: 'a b', cmds: [x]}]\n"),
    "depends_on as text": (BOTH_REFUSE, order("depends_on: b")),
    "when paths as text": (BOTH_REFUSE, order("when: {paths: 'infra/**'}")),
    "an unknown event": (BOTH_REFUSE, order("when: {events: [pushed]}")),
    "a timeout as text": (BOTH_REFUSE, order("timeout: '600'")),
    "a timeout over CodeBuild's 8 hours": (BOTH_REFUSE, order("timeout: 100000")),
    "must_succeed as a number": (BOTH_REFUSE, order("must_succeed: 1")),
    "a lock turned on": (BOTH_REFUSE, order("lock: true")),
    "a lock name with a space": (BOTH_REFUSE, order("lock: 'has space'")),
    "a source of two kinds": (BOTH_REFUSE, order("source: {s3: 's3://bucket/k.zip', path: .}")),
    "a role that is no ARN": (BOTH_REFUSE, order("aws_role: deployer")),
    "an empty image": (BOTH_REFUSE, order("image: ''")),
    "a matrix value with a space": (BOTH_REFUSE, order("matrix: {v: [abc def]}")),
    "a matrix value as null": (BOTH_REFUSE, order("matrix: {v: [null]}")),
    # -- the parser alone: checks across fields
    "a dependency on no order": (ACROSS_FIELDS, order("depends_on: [zz]")),
    "two orders of one name": (ACROSS_FIELDS, "orders: [{name: a, cmds: [x]}, {name: a, cmds: [y]}]\n"),
    "an input from no dependency": (ACROSS_FIELDS, order("inputs: [{from: b, path: p}]")),
    "drift on an apply order": (ACROSS_FIELDS, order("drift: true, command: apply")),
    "apply_on on a plan order": (ACROSS_FIELDS, order("apply_on: merge")),
    "apply requirements on a plan order": (ACROSS_FIELDS, order("apply_requirements: [approved]")),
    "run_if without depends_on": (ACROSS_FIELDS, order("run_if: drifted")),
    "privileged without an image": (ACROSS_FIELDS, order("privileged: true")),
    "a lambda order over 900 seconds": (ACROSS_FIELDS, order("target: lambda, timeout: 1000")),
    "one secret variable twice": (ACROSS_FIELDS, order("secrets: [{env: A, ssm: /iac-ci/a}, "
                                                       "{env: A, ssm: /iac-ci/b}]")),
    "a matrix variable that is a parameter": (ACROSS_FIELDS, "params: {py: {default: '3'}}\n"
                                                             + order("matrix: {py: ['3.11']}")),
    "a required parameter, given no value": (ACROSS_FIELDS, "params: {x: {}}\n" + A),
    "a boolean parameter's default not a boolean": (ACROSS_FIELDS, "params: {x: {type: boolean, default: maybe}}\n"
                                                                   + A),
    "a default not allowed": (ACROSS_FIELDS, "params: {x: {default: c, allowed: [a, b]}}\n" + A),
    "two jobs answering to pull requests": (ACROSS_FIELDS, jobs(a=job("pull_request"), b=job("pull_request"))),
    "after a job the file lacks": (ACROSS_FIELDS, jobs(a=job("{after: {job: zz}}"))),
    "a job that follows itself": (ACROSS_FIELDS, jobs(a=job("{after: {job: a}}"))),
    "jobs in a loop": (ACROSS_FIELDS, jobs(a=job("{after: {job: b}}"), b=job("{after: {job: a}}"))),
    # -- the parser alone: against the deployment
    "an SSM parameter outside the granted prefix": (DEPLOYMENT, order("secrets: [{env: A, ssm: relative}]")),
    "a role no environment grants": (DEPLOYMENT, order("aws_role: 'arn:aws:iam::123456789012:role/deployer'")),
    "an environment the deployment lacks": (DEPLOYMENT, order("environment: prod")),
    "an image the deployment lacks": (DEPLOYMENT, order("image: tf")),
    "a local path source": (DEPLOYMENT, order("source: {path: .}")),
    "a source bucket not allowed": (DEPLOYMENT, order("source: {s3: 's3://my-bucket/k.zip'}")),
    # -- the parser alone: checks that run code
    "a dir outside the source": (RUNS_CODE, order("dir: ../x")),
    "an artifact outside the folder": (RUNS_CODE, order("artifacts: ['../x']")),
    "an absolute when path": (RUNS_CODE, order("when: {paths: ['/abs']}")),
    "a when path through ..": (RUNS_CODE, order("when: {paths: ['a/../b']}")),
    "a push path through ..": (RUNS_CODE, "on: {push: {paths: ['../x']}}\n" + A),
    "a cron that is no cron": (RUNS_CODE, "on: {schedule: [{cron: 'not a cron'}]}\n" + A),
    "a git URL of another scheme": (RUNS_CODE, order("source: {git: {url: 'ftp://x/y'}}")),
    "a git ref like an option": (RUNS_CODE, order("source: {git: {url: 'https://x/y', ref: '-x'}}")),
    "a matrix variable the shell sets": (RUNS_CODE, order("matrix: {PATH: [a]}")),
    "a parameter named like AWS's variables": (RUNS_CODE, "params: {AWS_X: {default: a}}\n" + A),
    # -- the parser alone: JSON cannot tell 600.0 from 600
    "a timeout written 600.0": (JSON_NUMBER, order("timeout: 600.0")),
    "required reviews written 2.0": (JSON_NUMBER, order("required_reviews: 2.0, command: apply")),
}


def cases(*verdicts: str) -> list[Any]:
    return [pytest.param(text, id=label) for label, (verdict, text) in CASES.items() if verdict in verdicts]


@pytest.mark.parametrize("text", cases(BOTH_ACCEPT))
def test_what_the_parser_takes_the_schema_takes(text: str) -> None:
    assert parser_problems(text) == []
    assert schema_errors(text) == []


@pytest.mark.parametrize("text", cases(BOTH_REFUSE))
def test_what_the_parser_refuses_the_schema_refuses(text: str) -> None:
    assert parser_problems(text)
    assert schema_errors(text)


@pytest.mark.parametrize("text", cases(*ONLY_THE_PARSER))
def test_the_schema_is_looser_only_where_the_module_says(text: str) -> None:
    """Each of these the schema cannot see; once it can, the case belongs to the refused."""
    assert parser_problems(text)
    assert schema_errors(text) == []


def test_the_cases_are_broad_and_their_exceptions_documented() -> None:
    verdicts = [verdict for verdict, _ in CASES.values()]
    assert len(CASES) >= 40 and set(verdicts) == {BOTH_ACCEPT, BOTH_REFUSE, *ONLY_THE_PARSER}
    doc = " ".join((repo_config_schema.__doc__ or "").split())
    assert all(reason in doc for reason in ONLY_THE_PARSER)


def test_a_name_that_is_not_text_is_reported_with_every_other_problem() -> None:
    problems = parser_problems("name: [x]\norders: [{name: a, cmds: []}]\n")
    assert problems[0].startswith("job: name: must be a job name, as text")
    assert any(p.startswith("order 'a': cmds:") for p in problems[1:])  # its orders are still checked
    jobs, _ = repo_config.jobs_of(repo_config.parse("name: 123\n" + A)[0], "acme/My_Infra")
    assert [(j.name, j.config["name"]) for j in jobs] == [("my-infra", "my-infra")]  # not the 123


def test_a_mapping_whose_keys_have_a_pattern_takes_no_other_key() -> None:
    keyed = [n for n in _nodes(SCHEMA) if "patternProperties" in n]
    assert len(keyed) >= 6  # env, params (at the top and in a job of jobs), an order's env and matrix
    assert all(n["additionalProperties"] is False for n in keyed)


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


def test_every_key_has_help_an_editor_shows_on_hover() -> None:
    """Every property of every object: the top-level keys, a job's, an order's, ``when``'s, the
    triggers' and the other nested objects'."""
    keys = [(name, body) for node in _nodes(SCHEMA) if isinstance(node.get("properties"), dict)
            for name, body in node["properties"].items()]
    assert len(keys) >= 70  # 7 top-level keys, 27 of an order, ...
    assert [name for name, body in keys if not body.get("description")] == []
    assert DEFS["Order"]["properties"]["run_if"]["description"].startswith("When it runs")
    assert DEFS["RepoJob"]["properties"]["on"]["description"] != SCHEMA["properties"]["on"]["description"]


def test_help_for_a_field_the_schema_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A renamed field cannot leave its help behind, describing nothing."""
    monkeypatch.setitem(repo_config_schema.FIELD_HELP, "When", {"pathz": "a typo"})
    with pytest.raises(repo_config_schema.SchemaDrift, match=r"When\.pathz"):
        repo_config_schema.build()


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
