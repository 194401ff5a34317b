"""``.iac-ci.yml``: reading it, every problem at once, and the protected environments' rule.

The file holds one job (``orders``, plus ``name``, ``env``, ``timeout``, ``params`` and ``on``, its
triggers: ``lambda_runtime.pipelines.triggers``; without ``on``, it answers to pull requests), or
several under ``jobs: {<name>: {on: ..., orders: ...}}``, each with its own ``on``. At most one job
answers to pull requests; jobs chained with ``on: after`` inside one file must not loop. Problems are
all reported in one list: a YAML error with its line and column; unknown top-level keys next to
the orders' own problems (an unknown key never hides them); and the whole config is validated,
every command's orders, whatever a trigger then selects.

Orders of a *protected* environment (``Environment.protected``: any rule) come from the base
branch's config, never from the pull request's head: a pull request cannot change what runs with
a protected environment's credentials, only the code it runs on. A head order in a protected
environment is replaced by the base's order of the same name (in a protected environment too)
or dropped; a note on the PR lists both. The job-level ``env`` of the head does not reach those
orders (the base's does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from lambda_runtime.job import dag, yaml_text
from lambda_runtime.job.model import JOB_NAME_RE
from lambda_runtime.job.validate import Problem
from lambda_runtime.pipelines.triggers import DEFAULT_ON, On
from lambda_runtime.policy.model import Policy

if TYPE_CHECKING:
    from lambda_runtime.github.events import PullRequest

JOB_KEYS = ("orders", "name", "env", "timeout", "params", "on")
CONFIG_KEYS = (*JOB_KEYS, "jobs")
MAX_JOBS = 50
MAX_LISTED_PROBLEMS = 200
MAX_LISTED_ORDERS = 100
JOB_NAME_CHARS = "lower-case letters, digits and '-'"


def parse(text: str) -> tuple[dict[str, Any], list[Problem]]:
    """The config's known keys, and the problems found reading it (unknown keys among them)."""
    try:
        config = yaml_text.load(text)
    except yaml.YAMLError as exc:
        return {}, [Problem(None, "", f"not valid YAML: {yaml_text.describe(exc)}")]
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        return {}, [Problem(None, "", f"not a YAML document iac-ci can read: {str(exc)[:200]}")]
    return parse_loaded(config)


def parse_loaded(config: Any) -> tuple[dict[str, Any], list[Problem]]:
    """``parse`` of a document read already (a job file the CLI loaded)."""
    if not isinstance(config, dict):
        return {}, [Problem(None, "", "must be a mapping with 'orders'")]
    problems = [Problem(None, str(k)[:100], f"unknown field (fields: {', '.join(CONFIG_KEYS)})")
                for k in sorted(set(config) - set(CONFIG_KEYS), key=str)]
    return {k: v for k, v in config.items() if k in CONFIG_KEYS}, problems


@dataclass(frozen=True)
class RepoJob:
    """One job of the config: its name, its triggers, and its keys as written (``orders``, ``env``,
    ``timeout``, ``params``), which the job document is built from."""

    name: str
    on: On
    config: dict[str, Any]


def jobs_of(config: dict[str, Any], repo: str) -> tuple[list[RepoJob], list[Problem]]:
    """The config's jobs and the problems of their names and triggers (the orders are checked
    when a job's document is validated)."""
    label, problems = _name(config, repo)
    if "jobs" not in config:
        on, found = _on(config, "on")
        job = RepoJob(label, on or DEFAULT_ON, {**_job_keys(config), "name": label})
        return ([job] if not found else []), problems + found
    raw = config["jobs"]
    # beside jobs:, a job's key belongs to no job: a top-level env or timeout would be dropped unseen
    beside = [k for k in JOB_KEYS if k in config]
    if beside:
        problems.append(Problem(None, "jobs", f"give either one job or several under jobs, not both: "
                                              f"{', '.join(beside)} beside jobs apply to no job; move them into each "
                                              f"job of jobs"))
    if not isinstance(raw, dict) or not raw:
        return [], problems + [Problem(None, "jobs", "must be a mapping of job names to jobs")]
    if len(raw) > MAX_JOBS:
        problems.append(Problem(None, "jobs", f"at most {MAX_JOBS} jobs"))
    jobs = []
    for name, body in raw.items():
        where = f"jobs.{str(name)[:64]}"
        if not isinstance(name, str) or not re.match(JOB_NAME_RE, name) or len(name) > 63:
            problems.append(Problem(None, where, f"a job name is {JOB_NAME_CHARS}"))
            continue
        if not isinstance(body, dict):
            problems.append(Problem(None, where, "must be a mapping with 'on' and 'orders'"))
            continue
        fields = ", ".join(k for k in JOB_KEYS if k != "name")
        problems += [Problem(None, f"{where}.{k}", f"unknown field (fields: {fields})")
                     for k in sorted(set(body) - set(JOB_KEYS) | ({"name"} & set(body)), key=str)]
        if "on" not in body:
            problems.append(Problem(None, f"{where}.on", "is required for each of several jobs (push, pull_request, "
                                                        "schedule, after)"))
            continue
        on, found = _on(body, f"{where}.on")
        problems += found
        if on is not None:
            jobs.append(RepoJob(name, on, {**_job_keys(body), "name": name}))
    pr_jobs = [j.name for j in jobs if j.on.pull_request]
    if len(pr_jobs) > 1:
        problems.append(Problem(None, "jobs", f"{', '.join(pr_jobs)} all answer to pull_request: at most one job "
                                              "plans and applies pull requests"))
    deps = {j.name: tuple(a.job for a in j.on.after or () if a.repo is None) for j in jobs}
    for j in jobs:
        for a in j.on.after or ():
            if a.repo is None and a.job not in deps:
                problems.append(Problem(None, f"jobs.{j.name}.on.after", f"unknown job '{a.job}'"))
            if a.repo is None and a.job == j.name:
                problems.append(Problem(None, f"jobs.{j.name}.on.after", "a job cannot follow itself"))
    for cycle in dag.find_cycles(deps):
        problems.append(Problem(None, f"jobs.{cycle[0]}.on.after", "the jobs trigger each other in a loop: "
                                                                 + " -> ".join(cycle)))
    return jobs, problems


def _name(config: dict[str, Any], repo: str) -> tuple[str, list[Problem]]:
    """The one job's name, the repository's when none is given. A name given as something other
    than text is a problem, not a quiet fall-back to the repository's; the job still takes the
    repository's, so its orders are checked too and every problem is listed at once. A text name
    is checked with the job (``Job.name``)."""
    if "name" not in config:
        return flow_label(repo), []
    given = config["name"]
    if isinstance(given, str) and given:
        return given, []
    return flow_label(repo), [Problem(None, "name", f"must be a job name, as text: {JOB_NAME_CHARS} (leave it out "
                                                    "for the repository's name)")]


def _job_keys(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k in JOB_KEYS and k != "on"}


def _on(body: dict[str, Any], where: str) -> tuple[On | None, list[Problem]]:
    if "on" not in body:
        return None, []
    try:
        return On.model_validate(body["on"]), []
    except ValidationError as exc:
        return None, [Problem(None, ".".join([where, *(str(p) for p in e["loc"])]).rstrip("."),
                              e["msg"].removeprefix("Value error, ")) for e in exc.errors()]


def followed(job: RepoJob, jobs: list[RepoJob]) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """The jobs ``job`` follows (``on: after``), each with its orders' names when it is in this file
    (expanded as the run will name them), for checking ``inputs: [{from: <job>/<order>}]`` up front."""
    from lambda_runtime.job import matrix

    by_name = {j.name: j for j in jobs}
    out: dict[str, tuple[str, ...] | None] = {}
    for a in job.on.after or ():
        upstream = by_name.get(a.job) if a.repo is None else None
        orders = upstream.config.get("orders") if upstream is not None else None
        if isinstance(orders, list):
            expanded = matrix.expand({"orders": orders})[0]["orders"]
            out[a.job] = tuple(str(o.get("name")) for o in expanded if isinstance(o, dict))
        else:
            out.setdefault(a.job, None)
    return tuple(out.items())


def pull_request_job(jobs: list[RepoJob], base_ref: str | None = None) -> RepoJob | None:
    """The job that answers to pull requests (into ``base_ref``, when its trigger names branches)."""
    for job in jobs:
        if job.on.pull_request and (base_ref is None or job.on.pull_request.matches_base(base_ref)):
            return job
    return None


# ---- protected environments --------------------------------------------------------------------
def _environment_name(order: Any) -> Any:
    return order.get("environment") if isinstance(order, dict) else None


def _protected(order: Any, policy: Policy) -> bool:
    """Whether a raw order (as written in the config) runs in a protected environment."""
    if not isinstance(order, dict):
        return False
    name = _environment_name(order)
    if name is not None and not isinstance(name, str):
        return False  # invalid: validation names it
    found = policy.environment_for(name)
    return found is not None and found[1].protected


def protected_from_base(head_orders: list[Any], head_env: Any, base: dict[str, Any] | None, policy: Policy
                        ) -> tuple[list[Any], Any, list[str], list[str]]:
    """The orders to run: the head's, except that each head order in a protected environment is
    the base's protected order of that name, or is dropped. Returns (orders, job env, replaced,
    dropped). When a base order is kept, the job-level ``env`` is folded into each order (the
    head's into the head's orders, the base's into the base's), so the head's job env cannot
    reach a protected order."""
    base_orders = base.get("orders") if base else None
    by_name = {o["name"]: o for o in base_orders if isinstance(o, dict) and isinstance(o.get("name"), str)
               and _protected(o, policy)} if isinstance(base_orders, list) else {}
    base_env = base.get("env") if base else None
    out: list[Any] = []
    kept: list[int] = []  # indexes of orders taken from the base
    replaced, dropped = [], []
    for order in head_orders:
        if not _protected(order, policy):
            out.append(order)
            continue
        name = order.get("name")
        theirs = by_name.get(name) if isinstance(name, str) else None
        if theirs is None:
            dropped.append(str(name))
            continue
        if theirs != order:
            replaced.append(str(name))
        kept.append(len(out))
        out.append(theirs)
    env = head_env
    if kept and (head_env or base_env):
        if not (head_env is None or isinstance(head_env, dict)) or not (base_env is None or isinstance(base_env, dict)):
            return out, head_env, replaced, dropped  # an invalid env: validation names it
        folded = []
        for i, order in enumerate(out):
            job_env = base_env if i in kept else head_env
            if isinstance(order, dict) and job_env:
                own = order.get("env")
                order = {**order, "env": {**job_env, **own} if isinstance(own, dict) else own if own is not None
                         else dict(job_env)}
            folded.append(order)
        out, env = folded, None
    return out, env, replaced, dropped


def protected_note(pr: PullRequest, replaced: list[str], dropped: list[str], path: str, base_found: bool) -> str:
    """The PR note naming the orders a protected environment took from the base branch."""
    lines = [f"<!-- iac-ci:protected:{pr.head_sha}:{','.join(sorted(replaced))}:{','.join(sorted(dropped))} -->",
             f"### 🔒 iac-ci: protected environments run `{pr.base_ref}`'s orders", "",
             f"Orders in a protected environment run as `{path}` on `{pr.base_ref}` "
             f"(commit `{(pr.base_sha or '')[:12]}`) defines them, not as this pull request does; the code they "
             f"run on is this pull request's (`{pr.head_sha[:12]}`).", ""]
    lines += [f"- `{n}`: replaced by its definition on `{pr.base_ref}`" for n in replaced[:MAX_LISTED_ORDERS]]
    why = "not defined there" if base_found else f"`{pr.base_ref}` has no readable `{path}`"
    lines += [f"- `{n}`: dropped ({why}); it runs once the change is merged" for n in dropped[:MAX_LISTED_ORDERS]]
    return "\n".join(lines)



def config_problems_comment(path: str, sha: str, problems: list[Problem], *, title: str = "is invalid",
                            key: str = "") -> str:
    """The one PR comment for an invalid config file: every problem (up to a bound), under GitHub's limit.
    ``key`` (the delivery) makes a retried event post it once, and a later event post it again."""
    lines = [f"<!-- iac-ci:config:{sha}{':' + key if key else ''} -->",
             f"### ❌ iac-ci did not start: `{path}` at `{sha[:12]}` {title}", ""]
    lines += [f"- {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"- … and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)[:60000]


def flow_label(repo: str) -> str:
    """A valid job name from a repository name (``Org/My_Repo`` -> ``my-repo``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", repo.split("/")[-1].lower()).strip("-")
    return (name or "repo")[:63]


