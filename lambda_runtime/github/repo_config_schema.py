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
iac-ci sets (``SET_BY_IAC_CI``) are left out: the parser refuses them from an author.

The schema is meant for editors (``# yaml-language-server: $schema=...``) and checks: it is never
stricter than the parser, and looser only where the parser checks across fields (dependencies,
allow-lists, the jobs' ``after`` loops) or runs code (a cron expression, a path's ``..``). It is
written as JSON Schema draft-07, the draft the YAML language server (VS Code's YAML extension)
fully supports; later drafts get a "not yet fully supported" warning there.
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

DESCRIPTIONS = {
    "orders": "The job's orders: shell commands run in dependency order, on CodeBuild (default) or Lambda.",
    "name": "The job's name (statuses iac-ci/<name>); default: the repository's name.",
    "env": "Environment variables for every order.",
    "timeout": "The whole run, in seconds (default 21600).",
    "params": "Run parameters: each order sees each as an environment variable of its name.",
    "on": "What starts the job: pull_request (the default), push, schedule, after.",
    "jobs": "Several jobs, each with its own on: and orders:.",
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
    return {"description": DESCRIPTIONS["on"], "anyOf": [field, bare, {"type": "array", "items": bare}]}


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
            continue
        if key not in job["properties"]:
            raise SchemaDrift(f"repo_config.JOB_KEYS has '{key}', which is no field of Job")
        keys[key] = _coerce(defs, "Job", key, {**job["properties"][key], "description": DESCRIPTIONS[key]})
    for name, body in defs.items():
        for field, field_schema in body.get("properties", {}).items():
            body["properties"][field] = _coerce(defs, name, field, field_schema)

    defs["RepoJob"] = {
        "title": "A job of jobs:", "type": "object", "additionalProperties": False, "required": ["on", "orders"],
        "properties": {k: v for k, v in keys.items() if k != "name"},
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
             "not": {"anyOf": [{"required": ["orders"]}, {"required": ["on"]}]}},
        ],
    }
    schema[DEFS] = _reachable(schema, defs)
    return schema


def text() -> str:
    """The schema as ``iac-ci schema --repo-config`` prints it and ``iac-ci init`` writes it."""
    return json.dumps(build(), indent=2) + "\n"


def _coerce(defs: Schema, model: str, field: str, body: Schema) -> Schema:
    patch = COERCIONS.get((model, field))
    return patch(body, defs) if patch is not None else body


def _branches(field: Schema) -> list[Schema]:
    return [field, *field.get("anyOf", ())]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


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
