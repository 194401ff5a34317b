"""The JSON Schema of ``.iac-ci.yml``, built from the models and key lists the parser uses.

Nothing here restates a field. The keys are ``repo_config.CONFIG_KEYS`` and ``JOB_KEYS``; each
key's schema is that field of ``Job`` (``orders``, ``env``, ...) or ``On`` (``on``), as pydantic
renders them. What this module adds is what the parser accepts *before* a model sees it, which a
model's own schema cannot show:

- the shorthands of ``On._shorthand`` (``on: push``, ``on: [push, pull_request]``, ``after:`` as
  one mapping), the bare trigger names found by asking ``On`` which names it takes alone;
- the scalars that ``_param_text`` turns into text (``matrix: {python: [3.11]}``, a parameter's
  ``allowed: [1, 2]``).

``COERCIONS`` names each of those ``mode="before"`` validators, and a test checks that every such
validator of a model in the schema is listed, so a new one cannot slip past. Fields that only
iac-ci sets (``SET_BY_IAC_CI``) are left out: the parser refuses them from an author. A mapping
whose keys have a pattern is closed to other keys, as its key type is to the parser. Every key
has the hover help of ``DESCRIPTIONS`` and ``FIELD_HELP`` (or its model's own ``description=``).

The schema is meant for editors (``# yaml-language-server: $schema=...``) and checks: it is never
stricter than the parser, and looser only where

- the parser checks across fields (dependencies, the jobs' ``after`` loops, a parameter's value)
  or against the deployment (its allow-lists of secrets, roles and sources);
- it runs code (a cron expression, a path's ``..``);
- JSON cannot tell: JSON Schema's ``integer`` is any number without a fractional part, ``600.0``
  too, which the parser's strict integers refuse.

It is written as JSON Schema draft-07, the draft the YAML language server (VS Code's YAML
extension) fully supports; later drafts get a "not yet fully supported" warning there.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from lambda_runtime.github.repo_config import CONFIG_KEYS, JOB_KEYS, MAX_JOBS
from lambda_runtime.job.model import JOB_NAME_RE, Job
from lambda_runtime.pipelines.triggers import On

DRAFT = "http://json-schema.org/draft-07/schema#"
DEFS = "definitions"  # draft-07's name for pydantic's "$defs"
REF = f"#/{DEFS}/{{model}}"

Schema = dict[str, Any]

# fields of the models that only iac-ci sets (an author's is refused); left out of the schema
SET_BY_IAC_CI: dict[str, tuple[str, ...]] = {"Order": ("group",)}

# What an editor shows on hover (README.md's "Configuration keys" says the same at length). The
# top-level keys first; a job of ``jobs:`` takes the same texts, but for its ``on``.
DESCRIPTIONS = {
    "orders": "The job's orders, 1 to 5,000: commands run in dependency order, on CodeBuild (the default) or "
              "Lambda.",
    "name": "The job's name, its flow label ([a-z0-9][a-z0-9-]*, at most 63 characters); its commit status is "
            "iac-ci/<name>. Default: the repository's name.",
    "env": "Environment variables for every order (an order's own env wins).",
    "timeout": "The whole run, in seconds (default 21600, at most 7 days).",
    "params": "Run parameters, name -> {type, default, allowed, description}: the values a run may be given. "
              "Each order sees each as the environment variable of its name, never in a command.",
    "on": "What starts the job: pull_request (the default), push, schedule, after; a name, a list of names, "
          "or a mapping of triggers to their settings.",
    "jobs": "Several jobs, name -> {on, orders, env, timeout, params}, at most 50, instead of the top-level "
            "orders and on. At most one answers to pull_request.",
}
ON_OF_A_JOB = ("What starts this job (required): pull_request, push, schedule, after; a name, a list of names, "
               "or a mapping of triggers to their settings.")

_GLOBS = "* stays within a folder, ** crosses folders"
_SECRET_ENV = "The environment variable that holds the value in the order's commands."
# the fields of the models, by model; a model's own ``description=`` stands where a field is not here
FIELD_HELP: dict[str, dict[str, str]] = {
    "Order": {
        "name": "Unique in the job: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 200 characters; a matrix's instances "
                "add [var=value,...].",
        "cmds": "1 to 200 commands, run in turn by bash (set -eo pipefail) in the order's dir; the first failure "
                "fails the order.",
        "target": "Where it runs: codebuild (the default) or lambda (a timeout of at most 900 seconds).",
        "timeout": "Seconds it may run: default 600, at most 28,800 (8 h) on CodeBuild, 900 on Lambda.",
        "depends_on": "Orders that must have finished first (a matrix order's name: every instance). A plan "
                      "order cannot depend on an apply order.",
        "must_succeed": "false: a failure of this order neither stops its dependents nor fails the run "
                        "(default true).",
        "dir": "Where the commands run, relative to the source (it must exist). In a pull request it also sets "
               "the default paths (<dir>/**) and the default lock (<owner/repo>:<dir>).",
        "source": "The code it runs on, instead of the repository at the commit that runs: {git: {url, ref, "
                  "token}}, {s3: s3://bucket/key.zip} or {path: dir} (embedded only).",
        "env": "Environment variables of this order, over the job's env.",
        "secrets": "{env, ssm} or {env, secret, key}: values its environment grants, as environment variables, "
                   "read only at dispatch.",
        "aws_role": "A role ARN its environment grants: short-lived credentials, for as long as its timeout.",
        "environment": "The deployment policy's environment whose grants and rules apply (default: the "
                       "policy's default_environment).",
        "artifacts": "Paths (relative to dir) kept after it succeeds (or drifts), for the inputs of later orders "
                     "and of an apply run.",
        "inputs": "{from, path}: path of order from's artifacts, placed in this order's dir before its commands.",
        "command": "plan (the default) runs on open and push; apply runs on /iac-ci apply, or on merge.",
        "when": "{paths, events}: which changes and events select it, in a pull request or a pipeline run "
                "(default: paths <dir>/** in a pull request, every event).",
        "apply_on": "Apply orders only: command (/iac-ci apply) or merge. Default: the policy's "
                    "pull_requests.apply_on.",
        "lock": "A lock name ([A-Za-z0-9_.:/@#+=-], at most 256 characters), or false for none. Default: "
                "<owner/repo>:<dir> in a pull request's run, otherwise none.",
        "apply_requirements": "Apply orders only: approved, mergeable, undiverged, checks_green, added to its "
                              "environment's; checked when the apply is about to start.",
        "required_reviews": "Apply orders only: 1 to 50 approving reviews for approved; it can raise the "
                            "environment's number, not lower it.",
        "run_if": "When it runs, given how its dependencies ended: success (the default), always, failure or "
                  "drifted. Other than success needs depends_on.",
        "drift": "Plan orders only: exit code 2 means drift (drifted), not failure (default false).",
        "matrix": "Variable -> values (1 to 8 variables): one instance per combination, at most 256, each with "
                  "its values as environment variables.",
        "fail_fast": "A matrix order: one failed instance skips the queued siblings and stops the running ones "
                     "(default true).",
        "image": "CodeBuild only: a worker image the deployment allows, by name or URI (default: the engine's "
                 "image).",
        "privileged": "CodeBuild's privileged mode (docker builds), with an image the deployment allows to run "
                      "privileged (default false).",
    },
    "When": {
        "paths": f"Globs of changed files that select the order ({_GLOBS}). Default in a pull request: "
                 "<dir>/** for an order with a dir, otherwise any change. Schedules and after have no changed "
                 "files: paths do not narrow them.",
        "events": "The events that select it: opened, synchronize, reopened, ready_for_review, comment, merge, "
                  "merge_group; in pipeline runs push, schedule, after. Default: every event.",
    },
    "InputRef": {
        "from": "The order whose artifacts it takes: one of its dependencies, directly or not (a matrix "
                "instance by its full name); or <job>/<order>, an order of the run that started this one "
                "(on: after).",
        "path": "Which of those artifacts: a path that order kept, placed at the same path in this order's dir.",
    },
    "Param": {
        "type": "string (the default), boolean (true or false) or number (-?[0-9]+(.[0-9]+)?).",
        "default": "The value when the run gives none. Without it the parameter is required, and a push or a "
                   "schedule gives no values.",
        "allowed": "The only values accepted, 1 to 100 of them.",
        "description": "For people; at most 1,000 characters.",
    },
    "SsmSecret": {"env": _SECRET_ENV},
    "SecretsManagerSecret": {"env": _SECRET_ENV},
    "GitSource": {"git": "A git repository to clone: {url, ref, token}."},
    "GitSpec": {
        "url": "An https://, ssh:// or git@ URL (file:// in embedded mode only).",
        "token": "A token to clone with: {ssm} or {secret, key}, granted as a secret is.",
    },
    "On": {
        "pull_request": "The pull-request flow: plans on open and push, applies on /iac-ci apply or on merge.",
        "push": "A push to a matching branch that changed a matching path, or of a matching tag. It runs the "
                "pushed commit.",
        "schedule": "A list of {cron}, in UTC, at most 10: each runs the job on the default branch's head when "
                    "it comes due.",
        "after": "When a run of another job ends: {job, repo, statuses, branches}, or a list of them (at most "
                 "20).",
    },
    "PullRequestTrigger": {
        "branches": f"Globs of the base branch (default: any; {_GLOBS}); a pull request into another branch "
                    "runs nothing.",
    },
    "PushTrigger": {
        "branches": f"Globs of the pushed branch (default: every branch, unless tags is given; {_GLOBS}).",
        "tags": f"Globs of the pushed tag (default: none; {_GLOBS}).",
        "paths": f"Globs of the changed files (default: any change; {_GLOBS}). A tag push ignores them.",
    },
    "AfterTrigger": {
        "job": "The job to follow.",
        "repo": "owner/name: follow a job of another repository, which the deployment policy must allow "
                "(pipelines.chains). Default: this repository.",
        "statuses": "The upstream run's final statuses that start this job (default [succeeded]). A drifted "
                    "run is not succeeded: name it to follow drift checks.",
        "branches": f"Globs of the branch the upstream run ran (default: any; {_GLOBS}).",
    },
}


# ---- what the parser accepts before the models see it ---------------------------------------
def _scalars_as_text(field: Schema) -> Schema:
    """``_param_text``: YAML's ``true`` and ``3.11`` are a bool and a number; the parser takes
    their text, so where the model says "string" the document may hold either."""
    return {"anyOf": [field, {"type": "boolean"}, {"type": "number"}]}


def _matrix(field: Schema, defs: Schema) -> Schema:
    for branch in _branches(field):
        for values in branch.get("patternProperties", {}).values():
            values["items"] = _scalars_as_text(values["items"])
    return field


def _allowed(field: Schema, defs: Schema) -> Schema:
    for branch in _branches(field):
        if branch.get("type") == "array":
            branch["items"] = _scalars_as_text(branch["items"])
    return field


def _default(field: Schema, defs: Schema) -> Schema:
    """The model's own type already lists bool, int and float next to text."""
    kinds = {b.get("type") for b in _branches(field)}
    if not {"string", "boolean", "number"} <= kinds:
        raise SchemaDrift("Param.default no longer lists string, boolean and number")
    return field


def _on(field: Schema, defs: Schema) -> Schema:
    """``on: push``, ``on: [push, pull_request]``, and ``after:`` as a single mapping."""
    after = defs["On"]["properties"]["after"]
    after["anyOf"] = [{"$ref": REF.format(model="AfterTrigger")}, *after["anyOf"]]
    bare = {"enum": bare_triggers(), "type": "string"}
    return {"anyOf": [field, bare, {"type": "array", "items": bare}]}


# (model, field; None: the whole model) -> how its schema takes what the validator accepts
COERCIONS: dict[tuple[str, str | None], Callable[[Schema, Schema], Schema]] = {
    ("Order", "matrix"): _matrix,
    ("Param", "allowed"): _allowed,
    ("Param", "default"): _default,
    ("On", None): _on,
}


class SchemaDrift(RuntimeError):
    """A model changed in a way this module's additions no longer fit (a bug to fix here)."""


def bare_triggers() -> list[str]:
    """The triggers ``on:`` may name without settings (``on: [push]``), as ``On`` answers."""
    out = []
    for name in On.model_fields:
        try:
            On.model_validate([name])
        except ValidationError:
            continue
        out.append(name)
    return out


# ---- the schema ------------------------------------------------------------------------------
def build() -> Schema:
    """The JSON Schema (draft-07) of ``.iac-ci.yml``: one job, or several under ``jobs:``."""
    job = Job.model_json_schema(by_alias=True, ref_template=REF)
    on = On.model_json_schema(by_alias=True, ref_template=REF)
    defs: Schema = {}
    for source in (job, on):
        for name, body in source.pop("$defs", {}).items():
            if name in defs and defs[name] != body:
                raise SchemaDrift(f"two models are named {name}")
            defs[name] = body
    defs["On"] = on
    for model, fields in SET_BY_IAC_CI.items():
        for field in fields:
            defs[model]["properties"].pop(field)

    keys: Schema = {}
    for key in JOB_KEYS:
        if key == "on":
            keys[key] = COERCIONS[("On", None)]({"$ref": REF.format(model="On")}, defs)
        elif key in job["properties"]:
            keys[key] = _coerce(defs, "Job", key, job["properties"][key])
        else:
            raise SchemaDrift(f"repo_config.JOB_KEYS has '{key}', which is no field of Job")
        keys[key] = _described(keys[key], DESCRIPTIONS[key])
    for name, body in defs.items():
        for field, field_schema in body.get("properties", {}).items():
            body["properties"][field] = _coerce(defs, name, field, field_schema)
    _describe_fields(defs)

    defs["RepoJob"] = {
        "title": "A job of jobs:", "type": "object", "additionalProperties": False, "required": ["on", "orders"],
        "properties": {k: _described(v, ON_OF_A_JOB) if k == "on" else v for k, v in keys.items() if k != "name"},
    }
    extra = set(CONFIG_KEYS) - set(JOB_KEYS)
    if extra != {"jobs"}:
        raise SchemaDrift(f"repo_config.CONFIG_KEYS adds {sorted(extra)}; the schema knows 'jobs' only")
    properties = {**keys, "jobs": {
        "description": DESCRIPTIONS["jobs"], "type": "object", "minProperties": 1, "maxProperties": MAX_JOBS,
        "propertyNames": {"pattern": JOB_NAME_RE, "maxLength": 63},
        "additionalProperties": {"$ref": REF.format(model="RepoJob")},
    }}
    schema: Schema = {
        "$schema": DRAFT,
        "title": ".iac-ci.yml",
        "description": "iac-ci's repository configuration: one job (orders, on), or several under jobs. "
                       "Printed by `iac-ci schema --repo-config`.",
        "type": "object",
        "additionalProperties": False,
        "properties": {k: properties[k] for k in CONFIG_KEYS},
        "oneOf": [
            {"title": "one job", "required": ["orders"], "not": {"required": ["jobs"]}},
            {"title": "several jobs", "required": ["jobs"],
             "not": {"anyOf": [{"required": [k]} for k in JOB_KEYS]}},
        ],
    }
    schema[DEFS] = _reachable(schema, defs)
    _close_key_patterns(schema)
    return schema


def text() -> str:
    """The schema as ``iac-ci schema --repo-config`` prints it and ``iac-ci init`` writes it."""
    return json.dumps(build(), indent=2) + "\n"


def _coerce(defs: Schema, model: str, field: str, body: Schema) -> Schema:
    patch = COERCIONS.get((model, field))
    return patch(body, defs) if patch is not None else body


def _described(field: Schema, text: str) -> Schema:
    """``field`` with ``text`` as its hover help. Draft-07 ignores every keyword beside a ``$ref``,
    so a bare reference is wrapped (``allOf``) to carry it."""
    return {"description": text, "allOf": [field]} if "$ref" in field else {**field, "description": text}


def _describe_fields(defs: Schema) -> None:
    for model, fields in FIELD_HELP.items():
        properties = defs[model]["properties"] if model in defs else {}
        for field, text in fields.items():
            if field not in properties:
                raise SchemaDrift(f"FIELD_HELP describes {model}.{field}, which the schema does not have")
            properties[field] = _described(properties[field], text)


def _close_key_patterns(schema: Schema) -> None:
    """pydantic writes a mapping whose keys have a pattern (``env``, ``params``, ``matrix``) as
    ``patternProperties`` alone, and JSON Schema checks nothing of a key that misses every
    pattern: ``env: {bad-name: [1]}`` would pass. The parser refuses such a key (its key type
    has the pattern), so the schema does too."""
    for node in _objects(schema):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)


def _branches(field: Schema) -> list[Schema]:
    return [field, *field.get("anyOf", ())]


def _objects(node: Any) -> Iterator[Schema]:
    """Every mapping in ``node``, itself included, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _refs(node: Any) -> Iterator[str]:
    for found in _objects(node):
        ref = found.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]


def _reachable(schema: Schema, defs: Schema) -> Schema:
    """The definitions the schema refers to (Job's internal ones, ``context``, ``plan_run``, are not)."""
    seen: list[str] = []
    todo = list(_refs(schema))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.append(name)
            todo += list(_refs(defs[name]))
    return {name: defs[name] for name in sorted(seen)}


def models_in(schema: Schema) -> list[type[BaseModel]]:
    """The pydantic models whose schema is part of ``schema`` (for the coverage test)."""
    from lambda_runtime.job import model as job_model
    from lambda_runtime.pipelines import triggers

    known = {c.__name__: c for m in (job_model, triggers) for c in vars(m).values()
             if isinstance(c, type) and issubclass(c, BaseModel)}
    return [known[name] for name in schema[DEFS] if name in known]
