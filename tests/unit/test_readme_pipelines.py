"""The README's Pipelines section, read as the engine reads it: every ``.iac-ci.yml`` it shows parses
and validates, every event it shows is an event the engine publishes, and every cron conversion
it shows is the one EventBridge Scheduler gets.

The policy and the worker images the examples need come from the section itself (its policy
block and its ``WorkerImage`` snippets), so an example naming an environment or an image the
section does not declare fails here, as it would on a deployment.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lambda_runtime.github import repo_config
from lambda_runtime.job import matrix, yaml_text
from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job
from lambda_runtime.pipelines import cron
from lambda_runtime.pipelines.triggers import trigger_names
from lambda_runtime.policy.model import Policy, TriggerEvent
from lambda_runtime.schema import events
from lambda_runtime.schema.images import ImageAllowList, WorkerImage

README = Path(__file__).resolve().parents[2] / "README.md"
REPO = "acme/infra"  # the repository the section's examples live in
DEFAULT_BRANCH = "main"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
WORKER_IMAGE = re.compile(r'"([a-z0-9][a-z0-9_.-]*)":\s*WorkerImage\(uri="([^"]+)"(?:,\s*privileged=(True|False))?\)')
CRON_ROW = re.compile(r"^\| `([^`|]+)` \| (?:`(cron\([^`]+\))`|(refused)\b[^|]*) \|$", re.MULTILINE)


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Pipelines\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section()) if lang == language]


def yaml_documents() -> list[tuple[str, Any]]:
    return [(body, yaml_text.load(body)) for body in blocks("yaml")]


def repo_configs() -> list[str]:
    """The blocks that are an ``.iac-ci.yml`` (a trigger or several jobs), as written."""
    return [body for body, doc in yaml_documents() if isinstance(doc, dict) and ("jobs" in doc or "on" in doc)]


def deployment_policy() -> Policy:
    """The section's policy block (the one with environments or pipelines), else the default."""
    found = [doc for _, doc in yaml_documents()
             if isinstance(doc, dict) and ("environments" in doc or "pipelines" in doc)]
    assert len(found) <= 1, "one policy block in the Pipelines section"
    return Policy.model_validate(found[0]) if found else Policy()


def allowed_images() -> ImageAllowList:
    images = {name: WorkerImage(uri=uri, privileged=privileged == "True")
              for body in blocks("python") for name, uri, privileged in WORKER_IMAGE.findall(body)}
    return ImageAllowList(images=images)


def rules() -> ValidationPolicy:
    return ValidationPolicy(deployment=deployment_policy(), images=allowed_images(), check_rules=False)


def order_names(config: dict[str, Any]) -> list[str]:
    """A job's orders as a run has them (matrix instances expanded)."""
    expanded, problems = matrix.expand({"orders": config.get("orders")})
    assert not problems, problems
    return [o["name"] for o in expanded["orders"] if isinstance(o, dict)]


def upstream_for(job: repo_config.RepoJob, jobs: list[repo_config.RepoJob]) -> dict[str, Any] | None:
    """The ``upstream`` iac-ci gives a run that ``on: after`` started, when the job takes inputs
    from it (``<job>/<order>``): the upstream job's orders when it is in the same file, else the
    orders the inputs name (another repository's job)."""
    refs = [i["from"] for o in job.config.get("orders") or [] for i in o.get("inputs") or [] if "/" in i["from"]]
    if not refs:
        return None
    assert job.on.after, f"job {job.name} takes inputs from another job's run but has no on: after"
    names = {r.split("/", 1)[0] for r in refs}
    assert len(names) == 1, f"job {job.name}: inputs from one upstream job only ({names})"
    (up_job,) = names
    trigger = next((a for a in job.on.after if a.job == up_job), None)
    assert trigger is not None, f"job {job.name} takes inputs from {up_job} but does not follow it"
    same_file = {j.name: j for j in jobs}
    if trigger.repo is None:
        assert up_job in same_file, f"job {job.name} follows unknown job {up_job}"
        orders = order_names(same_file[up_job].config)
    else:
        orders = [r.split("/", 1)[1] for r in refs]
    return {"run_id": "0123456789abcdef", "job": up_job, "repo": trigger.repo, "status": "succeeded",
            "orders": orders, "chain": []}


def config_id(text: str) -> str:
    doc = yaml_text.load(text)
    return "+".join(doc["jobs"]) if "jobs" in doc else str(doc.get("name"))


def job_documents(text: str) -> list[tuple[repo_config.RepoJob, dict[str, Any], ValidationPolicy]]:
    """Each job of a config as a document, with the policy to validate it with: the
    ``.iac-ci.yml`` checks of ``iac-ci validate`` (``check_rules=False``), plus the ``upstream``
    a chained run carries, as ``pipeline_events.start`` builds it."""
    config, problems = repo_config.parse(text)
    assert problems == [], [str(p) for p in problems]
    jobs, problems = repo_config.jobs_of(config, REPO)
    assert problems == [], [str(p) for p in problems]
    assert jobs
    out = []
    for job in jobs:
        doc: dict[str, Any] = {**job.config, "name": job.name}
        policy = rules()
        upstream = upstream_for(job, jobs)
        if upstream is not None:
            doc["upstream"] = upstream
            policy = replace(policy, internal=True)
        out.append((job, doc, policy))
    return out


def test_the_section_has_examples_of_each_kind() -> None:
    assert len(repo_configs()) >= 5
    assert allowed_images().images, "a WorkerImage snippet"
    assert deployment_policy().pipelines.chains, "a policy with pipelines.chains"
    assert "examples/pipelines/README.md" in section()


@pytest.mark.parametrize("text", repo_configs(), ids=config_id)
def test_every_iac_ci_yml_parses_and_each_job_validates(text: str) -> None:
    for job, doc, policy in job_documents(text):
        try:
            parse_job(doc, policy)
        except JobValidationError as exc:
            pytest.fail(f"job {job.name}: " + "; ".join(str(p) for p in exc.problems))


@pytest.mark.parametrize("text", repo_configs(), ids=config_id)
def test_each_trigger_passes_the_environments_rules(text: str) -> None:
    """What a run of each trigger is checked against (its event, and the pushed branch or, for a
    schedule, a chain or a pull request into it, the default branch): the section's policy must let
    its own examples run."""
    for job, doc, policy in job_documents(text):
        for trigger in trigger_names(job.on):
            push = job.on.push
            branch = None if trigger == "push" and push and push.tags and not push.branches else DEFAULT_BRANCH
            try:
                parse_job(doc, replace(policy, check_rules=True, event=TriggerEvent(trigger), branch=branch))
            except JobValidationError as exc:
                pytest.fail(f"job {job.name} on {trigger}: " + "; ".join(str(p) for p in exc.problems))


def test_yaml_1_2_booleans_as_the_section_says() -> None:
    doc = yaml_text.load("on: push\nflag: no\nother: off\nyes: true\n")
    assert doc == {"on": "push", "flag": "no", "other": "off", "yes": True}


def test_every_event_example_is_an_event_the_engine_publishes() -> None:
    shown = [json.loads(body) for body in blocks("json")]
    examples = [e for e in shown if isinstance(e, dict) and "detail-type" in e]
    assert {e["detail-type"] for e in examples} >= {events.RUN_STATE_CHANGE, events.DRIFT_DETECTED}
    for event in examples:
        assert event["source"] == events.SOURCE
        model = events.DETAIL_MODELS[event["detail-type"]]
        detail = model.model_validate(event["detail"])
        assert detail.model_dump(mode="json") == event["detail"]  # nothing defaulted or coerced away
        subject = getattr(detail, "order", events.RUN_SUBJECT)
        status = str(getattr(detail, "status", "drift_detected"))
        assert detail.event_id == events.event_id(detail.run_id, subject, status, getattr(detail, "attempt", 0))


def test_the_cron_conversions_shown_are_eventbridges() -> None:
    rows = CRON_ROW.findall(section())
    assert len(rows) >= 4
    for expression, eventbridge, refused in rows:
        if refused:
            with pytest.raises(ValueError):
                cron.to_eventbridge(expression)
        else:
            assert cron.to_eventbridge(expression) == eventbridge, expression
