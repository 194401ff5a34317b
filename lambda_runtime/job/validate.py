"""Whole-job validation: every problem at once, each naming the order and the field.

Schema errors come from pydantic in one pass; graph and policy rules run on every order
that parsed, so a job with a bad timeout *and* a cycle reports both.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError

from lambda_runtime.job import dag, matrix
from lambda_runtime.job.model import (
    MAX_JOB_TIMEOUT,
    GitSource,
    Job,
    Order,
    PathSource,
    S3Source,
    SecretsManagerRef,
    SsmRef,
    reserved_env,
)
from lambda_runtime.policy.model import Environment, Policy, TriggerEvent, permissive_policy
from lambda_runtime.schema.images import ImageAllowList
from lambda_runtime.schema.retention import DAY_SECONDS

MAX_ORDERS = 5000


@dataclass(frozen=True)
class Problem:
    order: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"order '{self.order}'" if self.order is not None else "job"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"order": self.order, "field": self.field, "message": self.message}


class JobValidationError(ValueError):
    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("invalid job:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class ValidationPolicy:
    """What a deployment lets jobs reference. Defaults match the construct's defaults."""

    ssm_prefixes: tuple[str, ...] = ("/iac-ci/",)
    secret_prefixes: tuple[str, ...] = ("iac-ci/",)
    role_arn_patterns: tuple[str, ...] = ()
    source_bucket_patterns: tuple[str, ...] = ()  # buckets S3 zip sources may come from
    allow_local_sources: bool = False  # path sources and file:// git URLs: embedded mode only
    allowed_exact: frozenset[str] = field(default_factory=frozenset)  # order secrets named one by one
    # git credentials only (the deployment's GitHub token clones pull requests; no command sees it)
    git_token_exact: frozenset[str] = field(default_factory=frozenset)
    # the engine's own credentials (API signing key, webhook secret, GitHub token or App key):
    # refused as order secrets however they are named, even inside an allowed prefix or list
    engine_secrets: frozenset[str] = field(default_factory=frozenset)
    # the deployment policy: what each environment grants (None: one default environment made of
    # the prefixes above, today's behaviour); and the run's trigger its rules are checked against
    deployment: Policy | None = None
    event: TriggerEvent = TriggerEvent.SUBMIT
    branch: str | None = None  # the PR's base branch or the pushed branch
    # a fork's pull request under ``fork_pull_requests: without_secrets``: no order gets anything
    withhold_credentials: bool = False
    # the fields iac-ci sets itself (``plan_run``, ``context``): accepted only from the engine's
    # own pull-request flow, never from a job author (a plan run's artifacts hold secrets)
    internal: bool = False
    # the environments' event and branch rules; off when a whole ``.iac-ci.yml`` is checked, of
    # which a trigger runs only some orders (the run it builds is checked with them on)
    check_rules: bool = True
    # the worker images the deployment allows (None: none but the engine's own)
    images: ImageAllowList | None = None
    # the document is one iac-ci stored after validating it (its matrix expanded): packaging's read
    expanded: bool = False
    # a config's job checked as a whole (no run yet): the jobs it follows (``on: after``) and their
    # orders (None: another repository's, unknown here), whose artifacts its inputs may name
    followed: tuple[tuple[str, tuple[str, ...] | None], ...] = ()
    # the longest ``timeout`` the deployment takes (its ``max_run_days``): a run's objects expire on a
    # clock that assumes no run outlives it
    max_job_timeout: int = MAX_JOB_TIMEOUT

    def environments(self) -> Policy:
        if self.deployment is not None:
            return self.deployment
        def grants(prefixes: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(p or "*" for p in prefixes) + tuple(sorted(self.allowed_exact))  # "": everything

        return permissive_policy(ssm=grants(self.ssm_prefixes), secrets=grants(self.secret_prefixes),
                                 roles=self.role_arn_patterns)


def parse_job(raw: Any, policy: ValidationPolicy | None = None) -> Job:
    """Validate ``raw`` (already-parsed YAML/JSON) into a Job or raise JobValidationError."""
    policy = policy or ValidationPolicy()
    if not isinstance(raw, dict):
        raise JobValidationError([Problem(None, "", "a job must be a mapping with 'name' and 'orders'")])
    problems: list[Problem] = []
    # an expanded document (the engine's own, or one it stored) carries its instances' groups
    raw, expanded = matrix.expand(raw) if policy.internal or policy.expanded else matrix.expand_written(raw)
    problems.extend(Problem(o, f, m) for o, f, m in expanded)
    raw_orders = raw.get("orders")
    names_by_index = _names_by_index(raw_orders)
    job: Job | None = None
    try:
        job = Job.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_schema_problems(exc, names_by_index))
    orders = job.orders if job else _parse_orders_individually(raw_orders)
    elsewhere = _plan_run_orders(raw) if policy.internal else set()
    upstream_of = _upstream_orders(raw) if policy.internal else None
    if upstream_of is None and policy.followed:  # a config's job checked before any run: what it follows
        upstream_of = {job: set(orders) if orders is not None else None for job, orders in policy.followed}
    problems.extend(_graph_problems(_graph_view(raw_orders), len(raw_orders) if isinstance(raw_orders, list) else 0,
                                    elsewhere=elsewhere, upstream_run=upstream_of))
    problems.extend(_pipeline_problems(job, orders, policy))
    problems.extend(_command_problems(orders, policy.environments().pull_requests.apply_on.value))
    if not policy.internal:
        problems.extend(Problem(None, k, "is set by iac-ci only") for k in ("plan_run", "context", "upstream")
                        if k in raw)
    if job is not None and job.timeout > policy.max_job_timeout:
        problems.append(Problem(None, "timeout", f"{job.timeout} seconds is longer than this deployment lets a run "
                                                 f"last: at most {policy.max_job_timeout} (max_run_days "
                                                 f"{policy.max_job_timeout // DAY_SECONDS})"))
    job_sources = [("source", job.source)] if job and job.source else _job_source(raw)
    problems.extend(_policy_problems(orders, job_sources, policy))
    if problems:
        raise JobValidationError(_dedupe(problems))
    assert job is not None
    return job


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for p in problems:
        k = (p.order, p.field, p.message)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def _names_by_index(raw_orders: Any) -> dict[int, str]:
    if not isinstance(raw_orders, list):
        return {}
    out = {}
    for i, o in enumerate(raw_orders):
        name = o.get("name") if isinstance(o, dict) else None
        out[i] = name if isinstance(name, str) and name else f"#{i + 1}"
    return out


def _loc_str(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for i, p in enumerate(loc):
        prev = loc[i - 1] if i else None
        union_field = prev in ("source", "token") or (isinstance(prev, int) and i >= 2 and loc[i - 2] == "secrets")
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif union_field and p in ("ssm", "secret", "git", "s3", "path"):
            continue  # discriminator tag pydantic inserts into the location
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def _schema_problems(exc: ValidationError, names: dict[int, str]) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        order = None
        if len(loc) >= 2 and loc[0] == "orders" and isinstance(loc[1], int):
            order = names.get(loc[1], f"#{loc[1] + 1}")
            loc = loc[2:]
        if not loc and ":" in msg and order is not None:  # model-level check that names its own field
            fld, _, msg = msg.partition(":")
            out.append(Problem(order, fld.strip(), msg.strip()))
            continue
        out.append(Problem(order, _loc_str(loc), msg))
    return out


def _parse_orders_individually(raw_orders: Any) -> list[Order]:
    if not isinstance(raw_orders, list):
        return []
    out = []
    for o in raw_orders:
        try:
            out.append(Order.model_validate(o))
        except ValidationError:
            continue
    return out


def _job_source(raw: dict[str, Any]) -> list[tuple[str, Any]]:
    from pydantic import TypeAdapter

    from lambda_runtime.job.model import Source

    if raw.get("source") is None:
        return []
    try:
        # ``Source`` is an annotated union, which mypy does not take as a type argument here
        adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, Source))
        return [("source", adapter.validate_python(raw["source"]))]
    except ValidationError:
        return []


@dataclass
class _GraphNode:
    name: str
    depends_on: list[str]
    artifacts: list[str]
    inputs: list[tuple[str, str]]


def _graph_view(raw_orders: Any) -> list[_GraphNode]:
    """The graph-relevant fields of every order, read leniently from the raw data.

    Graph rules run on this view rather than on parsed orders so that an order with, say, a
    bad timeout still has its unknown dependencies and cycles reported in the same answer.
    Values of the wrong type are left to the schema errors.
    """
    if not isinstance(raw_orders, list):
        return []

    def strs(v: Any) -> list[str]:
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []

    out = []
    for o in raw_orders:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            continue
        raw_inputs = o.get("inputs")
        inputs = [
            (i["from"], i["path"])
            for i in (raw_inputs if isinstance(raw_inputs, list) else [])
            if isinstance(i, dict) and isinstance(i.get("from"), str) and isinstance(i.get("path"), str)
        ]
        out.append(_GraphNode(o["name"], strs(o.get("depends_on")), strs(o.get("artifacts")), inputs))
    return out


def _plan_run_orders(raw: dict[str, Any]) -> set[str]:
    plan_run = raw.get("plan_run")
    names = plan_run.get("orders") if isinstance(plan_run, dict) else None
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _command_problems(orders: list[Order], default_apply_on: str) -> list[Problem]:
    """A plan never waits for an apply (plans run on every push, applies only on command or
    merge), and an apply on command never waits for one that runs only after the merge."""
    by_name = {o.name: o for o in orders}
    out = [Problem(o.name, f, "only for orders with command: apply") for o in orders for f in o.apply_only_fields()]
    for o in orders:
        for d in o.depends_on:
            dep = by_name.get(d)
            if dep is None or dep.command != "apply":
                continue
            if o.command == "plan":
                out.append(Problem(o.name, "depends_on", f"a plan order cannot depend on apply order '{d}'"))
            elif (o.apply_on or default_apply_on) == "command" and (dep.apply_on or default_apply_on) == "merge":
                out.append(Problem(o.name, "depends_on", f"applies on `/iac-ci apply`, but '{d}' applies only on "
                                                         "merge (apply_on: merge)"))
    return out


def _upstream_orders(raw: dict[str, Any]) -> dict[str, set[str] | None] | None:
    up = raw.get("upstream")
    if not isinstance(up, dict) or not isinstance(up.get("job"), str):
        return None
    names = up.get("orders")
    return {up["job"]: {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()}


def _graph_problems(nodes: list[_GraphNode], total: int, *, elsewhere: set[str] | None = None,
                    upstream_run: dict[str, set[str] | None] | None = None) -> list[Problem]:
    """``elsewhere``: orders of the plan run an apply run takes artifacts from (not in this job);
    ``upstream_run``: job -> its orders (None: not known) of the run that started this one, or
    that may start it (``on: after``)."""
    problems: list[Problem] = []
    elsewhere = elsewhere or set()
    known = {n.name for n in nodes}
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.name] = counts.get(n.name, 0) + 1
    for name, c in counts.items():
        if c > 1:
            problems.append(Problem(name, "name", f"duplicate order name (used {c} times)"))
    deps: dict[str, tuple[str, ...]] = {}
    for o in nodes:
        deps.setdefault(o.name, tuple(dict.fromkeys(o.depends_on)))
        for d in o.depends_on:
            if d == o.name:
                problems.append(Problem(o.name, "depends_on", "an order cannot depend on itself"))
            elif d not in known:
                problems.append(Problem(o.name, "depends_on", f"unknown order '{d}'"))
    for cycle in dag.find_cycles(deps):
        problems.append(Problem(cycle[0], "depends_on", "dependency cycle: " + " -> ".join(cycle)))
    by_name = {o.name: o for o in nodes}
    index, ancestry = dag.ancestor_bitsets(deps)  # linear-ish even for 5,000 densely linked orders
    for o in nodes:
        if not o.inputs:
            continue
        bits = ancestry.get(o.name)
        upstream = dag.ancestors(deps, o.name) if bits is None else {n for n, i in index.items() if bits >> i & 1}
        for i, (src, path) in enumerate(o.inputs):
            if src not in known and src in elsewhere:
                continue  # the plan run's order: its artifacts were checked against the whole config
            if "/" in src:
                job_name, _, order_name = src.partition("/")
                if upstream_run is None:
                    problems.append(Problem(o.name, f"inputs[{i}].from", f"'{src}' is an order of job '{job_name}': "
                                            "only a run started by that job's run (on: after) has its artifacts"))
                elif job_name not in upstream_run or (upstream_run[job_name] is not None
                                                      and order_name not in (upstream_run[job_name] or ())):
                    followed = ", ".join(f"'{j}'" for j in sorted(upstream_run))
                    problems.append(Problem(o.name, f"inputs[{i}].from", f"'{src}' is not an order of a job this "
                                            f"one follows (on: after {followed})"))
                continue
            if src not in upstream:
                problems.append(Problem(o.name, f"inputs[{i}].from", f"'{src}' is not among this order's dependencies"))
            elif not any(_covers(a, path) for a in by_name[src].artifacts):
                problems.append(Problem(o.name, f"inputs[{i}].path", f"'{path}' is not an artifact of order '{src}'"))
    if total > MAX_ORDERS:
        problems.append(Problem(None, "orders", f"at most {MAX_ORDERS} orders per job"))
    return problems


def _pipeline_problems(job: Job | None, orders: list[Order], policy: ValidationPolicy) -> list[Problem]:
    """Parameters (every value given is defined and valid, every required one given, none hides
    another variable), ``run_if`` (it needs something to follow), images (only the deployment's)."""
    out: list[Problem] = []
    if job is not None:
        for name, value in sorted(job.param_values.items()):
            spec = job.params.get(name)
            if spec is None:
                known = ", ".join(sorted(job.params)) or "none"
                out.append(Problem(None, f"param_values.{name}", f"unknown parameter (parameters: {known})"))
                continue
            problem = spec.problem(value)
            if problem:
                out.append(Problem(None, f"params.{name}", problem))
        for name, spec in job.params.items():
            if spec.default is None and name not in job.param_values:
                out.append(Problem(None, f"params.{name}", f"needs a value (-p {name}=VALUE)"))
            if reserved_env(name):
                out.append(Problem(None, f"params.{name}", "is a variable iac-ci or the shell sets itself"))
            if name in job.env:
                out.append(Problem(None, f"params.{name}", "is also set in env: a parameter is the variable of "
                                                           "its name"))
        for o in orders:
            for name in sorted(set(o.env) & set(job.params)):
                out.append(Problem(o.name, f"env.{name}", "is a parameter of the job: a parameter is the variable of "
                                                          "its name"))
    for o in orders:
        if o.run_if != "success" and not o.depends_on:
            out.append(Problem(o.name, "run_if", f"'{o.run_if}' follows dependencies: it needs depends_on"))
        if o.image is not None:
            found = policy.images.resolve(o.image) if policy.images is not None else None
            names = ", ".join(sorted(policy.images.images)) if policy.images is not None else ""
            if found is None:
                out.append(Problem(o.name, "image", f"'{o.image[:200]}' is not an image this deployment allows "
                                                    f"(allowed: {names or 'none'})"))
            elif o.privileged and not found[1].privileged:
                out.append(Problem(o.name, "privileged", f"image '{o.image[:200]}' may not run privileged here"))
            elif not found[1].python:
                out.append(Problem(o.name, "image", f"'{o.image[:200]}' has no Python 3, which the worker needs "
                                                    "inside the image (see 'Worker images' in the README)"))
    return out


def _covers(artifact: str, path: str) -> bool:
    a = artifact.rstrip("/").removeprefix("./")
    p = path.rstrip("/").removeprefix("./")
    return p == a or p.startswith(a + "/")


def secret_name(ref: str) -> str:
    """Secrets Manager name from an id or ARN (``arn:...:secret:NAME-AbCdEf`` -> ``NAME``)."""
    if ref.startswith("arn:"):
        parts = ref.split(":", 6)
        if len(parts) == 7:
            name = parts[6]
            # ARNs carry a 6-character random suffix after the last hyphen
            head, sep, tail = name.rpartition("-")
            return head if sep and len(tail) == 6 else name
    return ref


def _policy_problems(
    orders: list[Order], job_sources: list[tuple[str, Any]], policy: ValidationPolicy
) -> list[Problem]:
    problems: list[Problem] = []
    deployment = policy.environments()
    engine = {secret_name(s) for s in policy.engine_secrets}
    default = deployment.environment_for(None)

    def check_ref(order: str | None, fld: str, ref: SsmRef | SecretsManagerRef, env: tuple[str, Environment] | None,
                  *, git_token: bool = False) -> None:
        if isinstance(ref, SecretsManagerRef) and secret_name(ref.secret) in engine:
            if not (git_token and ref.secret in policy.git_token_exact):
                problems.append(Problem(order, fld, f"secret '{ref.secret}' is one of the engine's own credentials "
                                                    "and is never given to an order"))
            return
        if git_token and isinstance(ref, SecretsManagerRef) and ref.secret in policy.git_token_exact:
            return
        if policy.withhold_credentials and not git_token:
            problems.append(Problem(order, fld, "this pull request comes from a fork or an untrusted author and "
                                                "runs without credentials"))
            return
        where = f"environment '{env[0]}'" if env else "no environment (the policy has no default)"
        if isinstance(ref, SsmRef):
            if env is None or not env[1].grants_ssm(ref.ssm):
                problems.append(Problem(order, fld, f"SSM parameter '{ref.ssm}' is not granted by {where}"
                                        + _granted(env[1].ssm if env else [])))
        else:
            name = secret_name(ref.secret)
            if env is None or not (env[1].grants_secret(ref.secret) or env[1].grants_secret(name)):
                problems.append(Problem(order, fld, f"secret '{ref.secret}' is not granted by {where}"
                                        + _granted(env[1].secrets if env else [])))

    def check_source(order: str | None, fld: str, src: Any, env: tuple[str, Environment] | None) -> None:
        if isinstance(src, PathSource) and not policy.allow_local_sources:
            problems.append(Problem(order, fld + ".path", "local path sources are accepted in embedded mode only"))
        if isinstance(src, S3Source):
            bucket = src.s3.removeprefix("s3://").split("/", 1)[0]
            if not any(fnmatch.fnmatchcase(bucket, p) for p in policy.source_bucket_patterns):
                problems.append(Problem(order, fld + ".s3", f"bucket '{bucket}' is not in the allowed source buckets"))
        if isinstance(src, GitSource):
            if src.git.url.startswith("file://") and not policy.allow_local_sources:
                problems.append(Problem(order, fld + ".git.url", "file:// URLs are accepted in embedded mode only"))
            if src.git.token is not None:
                check_ref(order, fld + ".git.token", src.git.token, env, git_token=True)

    for fld, src in job_sources:
        check_source(None, fld, src, default)
    for o in orders:
        env = deployment.environment_for(o.environment)
        if o.environment is not None and env is None:
            known = ", ".join(sorted(deployment.environments)) or "none"
            problems.append(Problem(o.name, "environment", f"unknown environment '{o.environment}' "
                                                           f"(the deployment declares: {known})"))
        elif env is not None and policy.check_rules:
            problems.extend(_rule_problems(o, env, policy))
        for i, s in enumerate(o.secrets):
            check_ref(o.name, f"secrets[{i}]", s, env)
        if o.source is not None:
            check_source(o.name, "source", o.source, env)
        if o.aws_role:
            if policy.withhold_credentials:
                problems.append(Problem(o.name, "aws_role", "this pull request comes from a fork or an untrusted "
                                                            "author and runs without credentials"))
            elif env is None or not env[1].grants_role(o.aws_role):
                where = f"environment '{env[0]}'" if env else "no environment"
                problems.append(Problem(o.name, "aws_role", f"role '{o.aws_role}' is not granted by {where}"
                                        + _granted(env[1].roles if env else [])))
    return problems


def _rule_problems(order: Order, env: tuple[str, Environment], policy: ValidationPolicy) -> list[Problem]:
    """An environment that does not accept this run's event or branch refuses the order now,
    rather than letting it wait for reviewers who could never release it."""
    name, rules = env
    out = []
    if not rules.allows_event(policy.event):
        allowed = ", ".join(e.value for e in rules.events or [])
        out.append(Problem(order.name, "environment", f"environment '{name}' does not accept {policy.event.value} "
                                                      f"runs (events: {allowed})"))
    elif policy.event is not TriggerEvent.SUBMIT and not rules.allows_branch(policy.branch):
        branches = ", ".join(rules.branches or [])
        out.append(Problem(order.name, "environment", f"environment '{name}' does not accept branch "
                                                      f"'{policy.branch}' (branches: {branches})"))
    return out


def _granted(entries: list[str]) -> str:
    return f" (it grants: {', '.join(entries[:10])}{', …' if len(entries) > 10 else ''})" if entries else \
        " (it grants none)"
