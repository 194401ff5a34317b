"""The ``iac-ci`` command.

Exit codes: 0 the job succeeded (or the file is valid); 1 it failed, timed out or was
cancelled; 2 the job file (or the policy) is invalid (the message names order and field), or
nothing could be built from its inputs (a source past its cap, a secret that does not exist).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from iac_ci.cli import tls
from iac_ci.cli.jobfile import JobFileError, is_repo_config, load_job_file, prepare, repo_config_job
from iac_ci.cli.local_approvals import LocalApprover, interactive
from iac_ci.cli.progress import Progress, orders_table
from lambda_runtime.approvals.logic import Approvals
from lambda_runtime.job.model import Job
from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job
from lambda_runtime.policy.model import Policy, PolicyError, load_policy_file
from lambda_runtime.schema.contract import LOG_TAIL_CHARS
from lambda_runtime.schema.images import ImageAllowList, WorkerImage

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_DRIFTED = 0, 1, 2, 3
EMBEDDED_ROLE_PATTERN = "arn:aws:iam::123456789012:role/*"
log_dir_option = click.option(
    "--log-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
    help="Keep the embedded stack's files in DIR: events.jsonl, metrics.jsonl (EMF) and each worker's output. "
         "Without it they go to a temporary folder, removed when the command ends.")


def embedded_policy(
    *, roles: tuple[str, ...] = (EMBEDDED_ROLE_PATTERN,), allowed_exact: frozenset[str] = frozenset(),
    deployment: Policy | None = None,
) -> ValidationPolicy:
    """What a local run accepts: local sources, any S3 bucket of the embedded AWS, its roles; with a
    deployment policy, what its environments grant instead of the roles and prefixes."""
    return ValidationPolicy(
        allow_local_sources=True, role_arn_patterns=roles, source_bucket_patterns=("*",), allowed_exact=allowed_exact,
        deployment=deployment,
    )


policy_option = click.option(
    "--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Deployment policy (YAML): environments, what they grant, reviewers. Default: one permissive environment.")


def _load_policy_or_exit(path: Path | None, err: Console) -> Policy | None:
    if path is None:
        return None
    try:
        return load_policy_file(path)
    except PolicyError as exc:
        err.print(f"[red]invalid policy[/] {path}:", highlight=False)
        for p in exc.problems:
            err.print(f"  - {p}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(EXIT_INVALID)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, val = v.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got '{v}'", param_hint=option)
        out[name] = val
    return out


def _images_or_exit(pairs: tuple[str, ...], err: Console) -> ImageAllowList:
    try:
        return ImageAllowList(images={k: WorkerImage(uri=v) for k, v in _pairs(pairs, "--image").items()})
    except ValueError as exc:
        err.print(f"[red]error:[/] --image: {exc}", highlight=False)
        sys.exit(EXIT_INVALID)


class _AnyImage(ImageAllowList):
    """``submit``: the stack checks images against its own list."""

    def resolve(self, ref: str) -> tuple[str, WorkerImage] | None:
        return ref, WorkerImage(uri="registry.invalid/any", privileged=True)


_ANY_IMAGE = _AnyImage()


def _load_or_exit(path: Path, policy: ValidationPolicy, err: Console, params: tuple[str, ...] = (),
                  job_name: str | None = None) -> tuple[dict[str, Any], Job]:
    """The job file as submitted (with ``-p`` values as ``param_values``), and the job it is. An
    ``.iac-ci.yml`` gives its job (``job_name``: one of its ``jobs:``), run on the file's folder."""
    try:
        raw = load_job_file(path)
        if is_repo_config(raw, path):
            raw = repo_config_job(raw, path, job_name)
        elif job_name is not None:
            raise JobFileError(f"--job is for an .iac-ci.yml; {path} is a job file")
        doc = prepare(raw, path.parent)
        if params:
            doc = {**doc, "param_values": {**(doc.get("param_values") or {}), **_pairs(params, "-p")}}
        return doc, parse_job(doc, policy)
    except JobFileError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
    except JobValidationError as exc:
        err.print(f"[red]invalid job[/] {path}:", highlight=False)
        for p in exc.problems:
            err.print(f"  - {p}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(EXIT_INVALID)


class _Commands(click.Group):
    """Every command that talks to an API fails the same way when it cannot reach it (refused, timed out,
    a TLS handshake refused): one line naming the endpoint, exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from iac_ci.remote.client import StackError

        try:
            return super().invoke(ctx)
        except StackError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """iac-ci: serverless continuous delivery for infrastructure as code."""


REPO_CONFIG_NAMES = (".iac-ci.yml", ".iac-ci.yaml")


@main.command()
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
@policy_option
@click.option("--repo-config", is_flag=True, help="Check FILE as a repository's .iac-ci.yml (the default for a "
              "file of that name): every command's orders, as a pull request would see them.")
def validate(job_file: Path, policy_file: Path | None, repo_config: bool) -> None:
    """Check a job file or an .iac-ci.yml (against a deployment policy); exit 0 if valid, 2 with
    every problem listed if not."""
    err = Console(stderr=True)
    policy = embedded_policy(deployment=_load_policy_or_exit(policy_file, err))
    if repo_config or job_file.name in REPO_CONFIG_NAMES:
        _validate_repo_config(job_file, policy, err)
        return
    _, job = _load_or_exit(job_file, policy, err)
    err.print(f"[green]valid[/]: job '{job.name}' with {len(job.orders)} orders", highlight=False)


def _validate_repo_config(path: Path, policy: ValidationPolicy, err: Console) -> None:
    """Checked as the pull-request flow checks it: unknown keys next to the orders' problems, and
    the environments' event and branch rules left to the runs (a trigger runs only some orders)."""
    import dataclasses

    from lambda_runtime.github import repo_config
    from lambda_runtime.job.validate import Problem
    from lambda_runtime.pipelines.triggers import trigger_names

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]error:[/] {path}: cannot be read ({exc.strerror})", highlight=False)
        sys.exit(EXIT_INVALID)
    config, problems = repo_config.parse(text)
    jobs, more = repo_config.jobs_of(config, path.resolve().parent.name)
    problems += more
    checked = []
    for repo_job in jobs:
        try:
            doc = {**repo_job.config, "name": repo_job.name}
            checked.append(parse_job(doc, dataclasses.replace(policy, check_rules=False,
                                                              followed=repo_config.followed(repo_job, jobs))))
        except JobValidationError as exc:
            problems += [dataclasses.replace(p, field=f"{repo_job.name}: {p.field}" if len(jobs) > 1 else p.field)
                         for p in exc.problems]
    if problems or not checked:
        err.print(f"[red]invalid .iac-ci.yml[/] {path}:", highlight=False)
        for p in problems or [Problem(None, "", "no job")]:
            err.print(f"  - {p}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(EXIT_INVALID)
    for job, repo_job in zip(checked, jobs, strict=True):
        plans = sum(1 for o in job.orders if o.command == "plan")
        triggers = ", ".join(trigger_names(repo_job.on))
        what = f"{plans} plan and {len(job.orders) - plans} apply orders" if repo_job.on.pull_request else \
            f"{len(job.orders)} orders"
        err.print(f"[green]valid[/]: .iac-ci.yml job '{job.name}' ({triggers}) with {what}", highlight=False)


@main.command()
@click.option("--repo-config", is_flag=True, help="The schema of a repository's .iac-ci.yml instead (one job or "
              "jobs:, on: triggers); `iac-ci init` writes it as .iac-ci.schema.json for editors.")
def schema(repo_config: bool) -> None:
    """Print the JSON Schema of the job file (or, with --repo-config, of .iac-ci.yml)."""
    if repo_config:
        from lambda_runtime.github import repo_config_schema

        click.echo(repo_config_schema.text(), nl=False)
        return
    click.echo(json.dumps(Job.model_json_schema(by_alias=True), indent=2))


@main.command()
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result on stdout.")
@click.option("--ssm", multiple=True, metavar="NAME=VALUE", help="Seed an SSM parameter in the embedded AWS.")
@click.option("--secret", multiple=True, metavar="ID=VALUE", help="Seed a Secrets Manager secret.")
@click.option("--endpoint-url", help="Use this AWS-compatible endpoint (e.g. a running moto server).")
@click.option("--allow-role", multiple=True, metavar="PATTERN", help="Extra role ARN patterns orders may assume.")
@click.option("--timeout", "wait_timeout", type=float, default=None, help="Give up waiting after this many seconds.")
@click.option("--quiet", is_flag=True, help="No live progress table.")
@policy_option
@click.option("--approve", multiple=True, metavar="ORDER",
              help="Approve ORDER when its environment asks ('all': every order). Without it a terminal prompts; "
                   "elsewhere an order awaiting approval is rejected.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a parameter of the job (params:); checked against its definition.")
@click.option("--image", "images", multiple=True, metavar="NAME=URI",
              help="Allow a worker image orders may name (image:); locally the commands run on this machine.")
@click.option("--job", "job_name", metavar="NAME", help="For an .iac-ci.yml with several jobs: the one to run.")
@log_dir_option
def run(
    job_file: Path,
    as_json: bool,
    ssm: tuple[str, ...],
    secret: tuple[str, ...],
    endpoint_url: str | None,
    allow_role: tuple[str, ...],
    wait_timeout: float | None,
    quiet: bool,
    policy_file: Path | None,
    approve: tuple[str, ...],
    params: tuple[str, ...],
    images: tuple[str, ...],
    job_name: str | None,
    log_dir: Path | None,
) -> None:
    """Run JOB_FILE (or a job of an .iac-ci.yml, on its folder) end to end on an embedded AWS (moto on
    loopback, workers as local processes)."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # the table is the output; JSON logs with --verbose
    from iac_ci.embedded.server import EmbeddedAws

    # the embedded AWS comes up in its own process while the job is read and checked (if it is
    # refused, the server goes with this process: it ends when its stdin does)
    pending = None if endpoint_url else EmbeddedAws.spawn()
    err = Console(stderr=True)
    ssm_values, secret_values = _pairs(ssm, "--ssm"), _pairs(secret, "--secret")
    roles = (EMBEDDED_ROLE_PATTERN, *allow_role)
    deployment = _load_policy_or_exit(policy_file, err)
    allowed_images = _images_or_exit(images, err)
    policy = dataclasses.replace(embedded_policy(
        roles=roles,
        allowed_exact=frozenset(ssm_values) | frozenset(secret_values),
        deployment=deployment,
    ), images=allowed_images)
    doc, job = _load_or_exit(job_file, policy, err, params, job_name)
    unknown = sorted(set(approve) - {o.name for o in job.orders} - {"all"})
    if unknown:
        err.print(f"[red]error:[/] --approve names no order of the job: {', '.join(unknown)}", highlight=False)
        sys.exit(EXIT_INVALID)

    from iac_ci.embedded.stack import EmbeddedStack
    from lambda_runtime.logs import logger

    _logs_to_stderr(logger)

    aws = pending.ready() if pending is not None else EmbeddedAws.attach(str(endpoint_url))
    first = sum(1 for o in job.orders if o.target == "lambda" and not o.depends_on)
    stack = EmbeddedStack(
        aws,
        log_dir=log_dir,
        prewarm=first,  # the first orders' Lambda environments start while the resources are made
        settings_overrides={
            "allowed_role_arns": roles,
            "allowed_source_buckets": ("*",),
            "allowed_exact_refs": tuple(ssm_values) + tuple(secret_values),
            "policy": deployment.to_json() if deployment is not None else "",
            "images": allowed_images.to_json(),
        },
    )
    try:
        for name, val in ssm_values.items():
            stack.clients.ssm.put_parameter(Name=name, Value=val, Type="SecureString", Overwrite=True)
        for sid, val in secret_values.items():
            _put_secret(stack.clients.secrets, sid, val)
        with stack:
            code, body = stack.submit(doc)
            _exit_if_rejected(code, body, err)
            run_id = body["run_id"]
            err.print(
                f"run [bold]{run_id}[/] accepted ({len(job.orders)} orders); trace {body['trace_id']}", highlight=False
            )
            approver = LocalApprover(
                Approvals(stack.clients, stack.store, stack.settings.internal_bucket, stack.settings.deployment_policy),
                run_id, approve, ask=(lambda q: click.confirm(q, default=False, err=True)) if interactive() else None,
                say=lambda m: err.print(m, highlight=False, markup=False))
            # the run's status is read only when something needs it: the live table, or an order of an
            # environment that waits for approval (on a 1,000-order run each read is a Query of them all)
            done = _follow(stack, run_id, err, live=not quiet and err.is_terminal, wait_timeout=wait_timeout,
                           on_summary=approver.check if _may_wait_for_approval(job, deployment) else None,
                           poll=progress_poll_seconds(len(job.orders)))
    finally:
        aws.stop()
        stack.remove_own_files()  # the workers' output is masked, but nothing of a run outlives the command unasked
    if log_dir is not None:
        err.print(f"events, metrics and the workers' output: {stack.log_dir}", highlight=False, soft_wrap=True)
    sys.exit(_report(done, as_json, err))


def _logs_to_stderr(logger: Any) -> None:
    """The engine's JSON log lines go to stderr: stdout is the result (``--json``) alone."""
    import logging

    logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"])
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


def _report(done: dict[str, Any], as_json: bool, err: Console) -> int:
    """The final table on stderr, the JSON result on stdout; returns the exit code."""
    err.print(orders_table(done, title=f"run {done['run_id']}: {done['status']}"))
    if done.get("error"):
        err.print("[red]error:[/] ", end="")
        err.print(str(done["error"]), highlight=False, markup=False, soft_wrap=True)
    if as_json:
        click.echo(json.dumps(json_result(done)))
    if done["status"] == "succeeded":
        return EXIT_OK
    if done["status"] == "drifted":  # every order ran; a drift check found changes
        return EXIT_DRIFTED
    # nothing could be built from the job's inputs (a source past its cap, a missing secret): bad input
    return EXIT_INVALID if done.get("error") and not done.get("orders") else EXIT_FAILED


def _may_wait_for_approval(job: Job, deployment: Policy | None) -> bool:
    """Whether an order of ``job`` runs in an environment that makes it wait (reviewers or a timer)."""
    if deployment is None:
        return False
    found = (deployment.environment_for(o.environment) for o in job.orders)
    return any(f is not None and f[1].gated for f in found)


def progress_poll_seconds(orders: int) -> float:
    """How often the live table reads the run: each second up to 200 orders, then less often (at
    most every 5 s), since each read costs in proportion to the run."""
    return min(5.0, max(1.0, orders / 200))


def _follow(stack: Any, run_id: str, err: Console, *, live: bool, wait_timeout: float | None,
            on_summary: Callable[[dict[str, Any]], None] | None = None, poll: float = 1.0) -> dict[str, Any]:
    """Wait for the done object with live progress; Ctrl-C cancels through the same path as the API."""
    cancelled = False

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal cancelled
        if not cancelled:
            cancelled = True
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with Progress(err, run_id, enabled=live) as progress:

            def tick(summary: dict[str, Any]) -> None:
                if on_summary is not None:
                    on_summary(summary)
                progress.update(summary)

            while True:
                try:
                    return stack.wait(
                        run_id, timeout=wait_timeout or 10**9, poll=poll,
                        on_progress=tick if live or on_summary is not None else None,
                    )
                except KeyboardInterrupt:
                    err.print("[yellow]cancelling...[/]")
                    stack.cancel(run_id)
                except TimeoutError:
                    err.print("[yellow]gave up waiting; cancelling...[/]")
                    stack.cancel(run_id)
                    wait_timeout = None
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_if_rejected(code: int, body: dict[str, Any], err: Console) -> None:
    if code == 202:
        return
    err.print(f"[red]rejected ({code})[/]: {body.get('error')}", highlight=False)
    for p in body.get("problems", []):
        where = f"order '{p['order']}'" if p.get("order") is not None else "job"
        err.print(f"  - {where}: {p['field']}: {p['message']}", markup=False, soft_wrap=True)
    sys.exit(EXIT_INVALID if code in (400, 413, 422) else EXIT_FAILED)


def json_result(done: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": done["run_id"],
        "status": done["status"],
        "orders": {
            name: {
                "status": o["status"],
                "exit_code": o.get("exit_code"),
                "duration_s": o.get("duration_s"),
                "log_tail": (o.get("log_tail") or "")[-LOG_TAIL_CHARS:],
                **({"approval": o["approval"], "reason": o.get("reason")} if o.get("approval") else {}),
            }
            for name, o in done.get("orders", {}).items()
        },
    }


def _put_secret(sm: Any, sid: str, value: str) -> None:
    from lambda_runtime.aws.clients import error_code

    try:
        sm.create_secret(Name=sid, SecretString=value)
    except Exception as exc:
        if error_code(exc) != "ResourceExistsException":
            raise
        sm.put_secret_value(SecretId=sid, SecretString=value)


# ---- commands for a deployed stack ------------------------------------------------------
SMOKE_JOB = {
    "name": "iac-ci-smoke",
    "timeout": 900,
    "orders": [
        {
            "name": "hello",
            "target": "lambda",
            "timeout": 120,
            "cmds": ["echo hello from $IAC_CI_ORDER", "mkdir -p out", "date > out/stamp"],
            "artifacts": ["out"],
        },
        {
            "name": "world",
            "target": "codebuild",
            "timeout": 600,
            "depends_on": ["hello"],
            "inputs": [{"from": "hello", "path": "out"}],
            "cmds": ["cat out/stamp", "echo world"],
        },
    ],
}


def _stack_client(stack: str, region: str | None, *, with_secret: bool = True) -> Any:
    """The stack's API; ``with_secret=False`` for a reviewer, whose requests SigV4 signs instead."""
    import boto3

    from iac_ci.remote.client import ApiClient, StackError, StackInfo

    session = boto3.Session(region_name=region)
    try:
        info = StackInfo.from_cloudformation(stack, session.client("cloudformation"))
        if not with_secret:
            return ApiClient(info.api_url, "", ssl_context=tls.client_context())
        secret = session.client("secretsmanager").get_secret_value(SecretId=info.secret_arn)["SecretString"]
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"cannot read the secret of stack '{stack}': {exc}") from None
    return ApiClient(info.api_url, secret, ssl_context=tls.client_context())


def _follow_remote(client: Any, run_id: str, err: Console, *, live: bool) -> dict[str, Any]:
    """Follow a deployed run; Ctrl-C asks the stack to cancel it and keeps following."""
    cancelled = False
    with Progress(err, run_id, enabled=live) as progress:
        while True:
            try:
                return client.follow(run_id, on_progress=progress.update)
            except KeyboardInterrupt:
                if cancelled:
                    raise
                cancelled = True
                err.print("[yellow]cancelling...[/]")
                client.cancel(run_id)


stack_option = click.option("--stack", required=True, help="Name of the deployed CloudFormation stack.")
region_option = click.option("--region", default=None, help="AWS region of the stack (default: your AWS config).")
url_option = click.option("--url", default=None, help="Base URL of an `iac-ci serve` instead of a stack.")
secret_option = click.option("--secret", envvar="IAC_CI_API_SECRET", default=None,
                             help="Signing secret of that serve (it prints it at start-up).")


def _one_target(stack: str | None, url: str | None) -> None:
    if (stack is None) == (url is None):
        raise click.UsageError("give either --stack (a deployed stack) or --url (an iac-ci serve)")


def _signed_client(stack: str | None, region: str | None, url: str | None, secret: str | None) -> Any:
    """The API client of a signed route: a deployed stack (its secret read with your AWS credentials)
    or an ``iac-ci serve`` (``--url`` with its ``--secret``)."""
    _one_target(stack, url)
    if stack is not None:
        return _stack_client(stack, region)
    if not secret:
        raise click.UsageError("--url needs --secret (the signing secret iac-ci serve prints)")
    from iac_ci.remote.client import ApiClient

    return ApiClient(str(url), secret, ssl_context=tls.client_context())


STACK_HELP = "Name of the deployed CloudFormation stack."


def target_options(stack_help: str = STACK_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The target of every signed command, declared once: a deployed stack (``--stack``, ``--region``)
    or an ``iac-ci serve`` (``--url``, ``--secret``); ``_signed_client`` builds the API client of
    either. A command taking it takes the parameters ``stack, region, url, secret``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        stack = click.option("--stack", default=None, help=stack_help)
        for option in reversed((stack, region_option, url_option, secret_option, *tls.options)):
            command = option(command)  # tls.options: --cert/--key/--ca, read by tls.client_context
        return command

    return decorate


@main.command()
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
@target_options()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result on stdout.")
@click.option("--idempotency-key", help="Retrying with the same key returns the first run instead of a new one.")
@click.option("--no-wait", is_flag=True, help="Print the run id and return once the job is accepted.")
@click.option("--quiet", is_flag=True, help="No live progress table.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a parameter of the job (params:); checked against its definition.")
def submit(
    job_file: Path,
    stack: str | None,
    region: str | None,
    url: str | None,
    secret: str | None,
    as_json: bool,
    idempotency_key: str | None,
    no_wait: bool,
    quiet: bool,
    params: tuple[str, ...],
) -> None:
    """Submit JOB_FILE to a deployed stack (or an iac-ci serve) and follow it to the end (same exit codes
    as `run`)."""
    err = Console(stderr=True)
    # the stack enforces its own allow-lists; locally only what does not depend on them (an iac-ci serve,
    # on the embedded AWS, takes local sources: it decides that too)
    doc, job = _load_or_exit(
        job_file,
        ValidationPolicy(
            role_arn_patterns=("*",), secret_prefixes=("",), ssm_prefixes=("",), source_bucket_patterns=("*",),
            images=_ANY_IMAGE, allow_local_sources=url is not None,
        ),
        err,
        params,
    )
    client = _signed_client(stack, region, url, secret)
    code, body = client.submit(json.dumps(doc).encode(), idempotency_key=idempotency_key)
    _exit_if_rejected(code, body, err)
    run_id = body["run_id"]
    err.print(
        f"run [bold]{run_id}[/] accepted by {escape(stack or str(url))} ({len(job.orders)} orders); "
        f"trace {body['trace_id']}",
        highlight=False,
    )
    if no_wait:
        click.echo(json.dumps(body) if as_json else run_id)
        return
    done = _follow_remote(client, run_id, err, live=not quiet and err.is_terminal)
    sys.exit(_report(done, as_json, err))


@main.command()
@click.argument("run_id")
@target_options()
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
def status(run_id: str, stack: str | None, region: str | None, url: str | None, secret: str | None,
           as_json: bool) -> None:
    """Show a run of a deployed stack or an iac-ci serve (exit 0 succeeded, 1 failed/not final, 2 unknown
    or expired run)."""

    err = Console(stderr=True)
    code, body = _signed_client(stack, region, url, secret).status(run_id)
    if code in (404, 410):  # never seen, or past its retention (the message says when it ended)
        err.print(f"[red]{escape(str(body.get('error')))}[/]", highlight=False)
        sys.exit(EXIT_INVALID)
    if code != 200:
        raise click.ClickException(f"status failed ({code}): {body.get('error')}")
    sys.exit(_report(body, as_json, err))


@main.command()
@click.argument("run_id")
@target_options()
def cancel(run_id: str, stack: str | None, region: str | None, url: str | None, secret: str | None) -> None:
    """Cancel a run of a deployed stack or an iac-ci serve: queued orders are cancelled, running builds stopped."""
    err = Console(stderr=True)
    code, body = _signed_client(stack, region, url, secret).cancel(run_id)
    if code == 202:
        err.print(f"run {run_id}: cancelling", highlight=False)
        return
    err.print(f"[red]cannot cancel ({code})[/]: {body.get('error')}", highlight=False)
    sys.exit(EXIT_INVALID if code == 404 else EXIT_FAILED)


def _decision_command(verdict: str) -> Any:
    @click.argument("run_id")
    @click.argument("orders", nargs=-1)
    @target_options(stack_help="Name of the deployed CloudFormation stack (you are the reviewer: your AWS "
                               "credentials sign the request).")
    @click.option("--approver", default=None, help="With --url: the GitHub login or IAM ARN deciding.")
    @click.option("--reason", default="", help="Why (recorded in the audit trail and the PR comment).")
    def command(run_id: str, orders: tuple[str, ...], stack: str | None, region: str | None, url: str | None,
                secret: str | None, approver: str | None, reason: str) -> None:
        err = Console(stderr=True)
        _one_target(stack, url)
        if stack is not None:
            import boto3

            from iac_ci.remote.client import SigV4

            session = boto3.Session(region_name=region)
            credentials = session.get_credentials()
            if credentials is None:
                raise click.ClickException("no AWS credentials: the reviewer is the caller's IAM principal")
            client = _stack_client(stack, region, with_secret=False)
            code, body = client.decide(run_id, verdict, list(orders), reason=reason,
                                       sigv4=SigV4(credentials, session.region_name or "us-east-1"))
        else:
            from iac_ci.remote.client import ApiClient

            if not secret or not approver:
                raise click.UsageError("--url needs --secret and --approver")
            client = ApiClient(str(url), secret, ssl_context=tls.client_context())
            code, body = client.decide(run_id, verdict, list(orders), reason=reason, approver=approver)
        for name in body.get("recorded", []):
            err.print(f"{verdict}d {name} as {body.get('reviewer')}", highlight=False, markup=False)
        for problem in body.get("problems", []) or ([body["error"]] if body.get("error") else []):
            err.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)
        if code != 200:
            sys.exit(EXIT_INVALID if code in (400, 404) else EXIT_FAILED)

    command.__doc__ = (f"{verdict.capitalize()} ORDERS of RUN_ID waiting for their environment's reviewers "
                       "(all waiting orders if none named).")
    return command


main.command("approve")(_decision_command("approve"))
main.command("reject")(_decision_command("reject"))


# ---- project locks ------------------------------------------------------------------------
PR_REF = re.compile(r"(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#(?P<number>[1-9][0-9]{0,9})")


def _span(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``40s``: how long, to the two largest units."""
    s = int(abs(seconds))
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{s}s"


def locks_table(locks: list[dict[str, Any]], now: float) -> Any:
    """The rich table of ``iac-ci locks``: name, holder, run, order, when taken, until when."""
    import datetime

    from rich.table import Table

    table = Table(title=f"{len(locks)} lock{'s' if len(locks) != 1 else ''}", title_justify="left")
    for column in ("name", "held by", "run", "order", "acquired", "expires in"):
        table.add_column(column, overflow="fold")
    for lock in locks:
        acquired = datetime.datetime.fromtimestamp(float(lock["acquired_at"]), datetime.UTC)
        left = float(lock["expires_at"]) - now
        expires = f"[red]expired {_span(left)} ago[/]" if lock.get("expired") or left <= 0 else _span(left)
        table.add_row(escape(str(lock["name"])), escape(str(lock.get("holder_label") or lock.get("holder"))),
                      escape(str(lock.get("run_id") or "")), escape(str(lock.get("order") or "")),
                      acquired.strftime("%Y-%m-%d %H:%M UTC"), expires)
    return table


@main.command()
@click.option("--all", "include_expired", is_flag=True, help="Include expired locks (they no longer block).")
@click.option("--json", "as_json", is_flag=True, help="Print {\"locks\": [...]} as JSON on stdout.")
@target_options()
def locks(include_expired: bool, as_json: bool, stack: str | None, region: str | None, url: str | None,
          secret: str | None) -> None:
    """List the project locks pull requests hold (exit 0; 1 if the API refused)."""
    import time

    err = Console(stderr=True)
    code, body = _signed_client(stack, region, url, secret).locks(include_expired=include_expired)
    if code != 200:
        raise click.ClickException(f"listing locks failed ({code}): {body.get('error')}")
    if as_json:
        click.echo(json.dumps(body))
        return
    err.print(locks_table(body.get("locks", []), time.time()))


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container)
        return "unknown"


@main.command()
@click.argument("names", nargs=-1)
@click.option("--pr", "pr_ref", default=None, metavar="OWNER/REPO#N", help="Release every lock of this pull request.")
@click.option("--reason", default="", help="Why (recorded in the locks' audit trail).")
@target_options()
def unlock(names: tuple[str, ...], pr_ref: str | None, reason: str, stack: str | None, region: str | None,
           url: str | None, secret: str | None) -> None:
    """Release locks NAMES (whoever holds them) or every lock of --pr; exit 0 if something was
    released, 1 if nothing was held, 2 on bad input."""
    err = Console(stderr=True)
    if bool(names) == (pr_ref is not None):
        raise click.UsageError("give lock NAMES or --pr OWNER/REPO#N (one of the two)")
    holder = None
    if pr_ref is not None:
        match = PR_REF.fullmatch(pr_ref)
        if match is None:
            raise click.BadParameter(f"expected OWNER/REPO#NUMBER (e.g. acme/infra#60), got '{pr_ref}'",
                                     param_hint="--pr")
        from lambda_runtime.store.pr_locks import Holder

        holder = Holder.pull_request(match["repo"], int(match["number"])).key
    client = _signed_client(stack, region, url, secret)
    code, body = client.release_locks(names=list(names) if names else None, holder=holder, reason=reason,
                                      by=f"cli:{_user()}")
    for name in body.get("released", []):
        err.print(f"released {name}", highlight=False, markup=False)
    for name in body.get("not_held", []):
        err.print(f"not held: {name}", highlight=False, markup=False)
    for name in body.get("contended", []):
        err.print(f"busy, try again: {name}", highlight=False, markup=False)
    for problem in body.get("problems", []) or ([body["error"]] if body.get("error") else []):
        err.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)
    if code == 400:
        sys.exit(EXIT_INVALID)
    if code != 200 or not body.get("released"):
        sys.exit(EXIT_FAILED)


@main.command()
@stack_option
@region_option
@click.option("--timeout", "wait_timeout", type=float, default=1200, help="Seconds to wait for the smoke job.")
@tls.client_options
def smoke(stack: str, region: str | None, wait_timeout: float) -> None:
    """Post-deploy check: run a two-order job (Lambda, then CodeBuild with an artifact) on the stack."""
    err = Console(stderr=True)
    client = _stack_client(stack, region)
    code, body = client.submit(json.dumps({**SMOKE_JOB, "username": "smoke"}).encode())
    _exit_if_rejected(code, body, err)
    run_id = body["run_id"]
    err.print(f"smoke run {run_id} accepted", highlight=False)
    try:
        done = client.follow(run_id, timeout=wait_timeout)
    except TimeoutError:
        client.cancel(run_id)
        err.print(f"[red]smoke run {run_id} did not finish within {wait_timeout:.0f}s[/]", highlight=False)
        sys.exit(EXIT_FAILED)
    code = _report(done, False, err)
    err.print("[green]smoke test passed[/]" if code == EXIT_OK else "[red]smoke test failed[/]")
    sys.exit(code)


# ---- a local stand-in for a deployed stack ------------------------------------------------
# the engine's own credentials live outside every job prefix (and are refused by name anyway)
GITHUB_WEBHOOK_SECRET_ID = "iac-ci-engine/github-webhook-secret"
GITHUB_TOKEN_SECRET_ID = "iac-ci-engine/github-token"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--webhook-secret", envvar="IAC_CI_GITHUB_WEBHOOK_SECRET", help="Secret of the GitHub webhook.")
@click.option("--github-api-url", default="https://api.github.com", show_default=True, help="GitHub REST API base.")
@click.option("--github-token", envvar="IAC_CI_GITHUB_TOKEN", help="Token for the GitHub API and for cloning.")
@click.option("--endpoint-url", help="Use this AWS-compatible endpoint instead of starting one.")
@click.option("--ssm", multiple=True, metavar="NAME=VALUE", help="Seed an SSM parameter in the embedded AWS.")
@click.option("--secret", multiple=True, metavar="ID=VALUE", help="Seed a Secrets Manager secret.")
@click.option("--public-url", default=None,
              help="Base URL of this server as browsers reach it, for the log links in PR comments "
                   "(default: the address it listens on).")
@click.option("--schedule-interval", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
              help="Seconds between two looks at the repositories' schedules (on: schedule).")
@policy_option
@tls.server_options
@log_dir_option
def serve(host: str, port: int, webhook_secret: str | None, github_api_url: str, github_token: str | None,
          endpoint_url: str | None, ssm: tuple[str, ...], secret: tuple[str, ...], public_url: str | None,
          schedule_interval: float, policy_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
          client_ca: Path | None, certs_table: str, log_dir: Path | None) -> None:
    """Serve the engine's HTTP API (jobs, runs, approvals, GitHub webhooks) on an embedded AWS until Ctrl-C
    (HTTPS with --tls-cert/--tls-key; mutual TLS with --client-ca)."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    err = Console(stderr=True)
    ssl_context = tls.server_context(tls_cert, tls_key, client_ca)
    ssm_values, secret_values = _pairs(ssm, "--ssm"), _pairs(secret, "--secret")
    deployment = _load_policy_or_exit(policy_file, err)

    from iac_ci.embedded.http_api import HttpApi
    from iac_ci.embedded.server import EmbeddedAws
    from iac_ci.embedded.stack import EmbeddedStack
    from lambda_runtime.logs import logger

    _logs_to_stderr(logger)
    aws = EmbeddedAws.attach(endpoint_url) if endpoint_url else EmbeddedAws.start()
    try:
        from lambda_runtime.aws.clients import AwsClients

        seed = AwsClients(region=aws.region)
        for k, v in aws.env().items():
            os.environ.setdefault(k, v)
        os.environ["AWS_ENDPOINT_URL"] = aws.endpoint
        overrides: dict[str, Any] = {
            "allowed_role_arns": (EMBEDDED_ROLE_PATTERN,), "allowed_source_buckets": ("*",),
            "allowed_exact_refs": tuple(ssm_values) + tuple(secret_values),
            "github_api_url": github_api_url, "github_seconds_between_writes": 0.05,
            "policy": deployment.to_json() if deployment is not None else "",
        }
        if webhook_secret:
            _put_secret(seed.secrets, GITHUB_WEBHOOK_SECRET_ID, webhook_secret)
            overrides["github_webhook_secret_id"] = GITHUB_WEBHOOK_SECRET_ID
        if github_token:
            _put_secret(seed.secrets, GITHUB_TOKEN_SECRET_ID, github_token)
            overrides["github_token_secret_id"] = GITHUB_TOKEN_SECRET_ID
        for name, val in ssm_values.items():
            seed.ssm.put_parameter(Name=name, Value=val, Type="SecureString", Overwrite=True)
        for sid, val in secret_values.items():
            _put_secret(seed.secrets, sid, val)
        http = HttpApi(None, host=host, port=port, ssl_context=ssl_context)  # bound now: the log links name its URL
        overrides["api_url"] = (public_url or http.url).rstrip("/")
        stack = EmbeddedStack(aws, settings_overrides=overrides, log_dir=log_dir)
        if client_ca is not None:  # the revocation check a deployed stack's intake runs (intake.client_certs)
            tls.check_client_certs(stack, certs_table)
            err.print(f"mutual TLS: client certificates must chain to {client_ca} and be active in table "
                      f"{certs_table}", highlight=False, soft_wrap=True)
        with stack, http.attach(stack.api):
            if stack.scheduler is not None:  # the repositories' schedules (on: schedule) fire here
                stack.scheduler.start(interval=schedule_interval)
            err.print(f"iac-ci listening on {http.url} (POST /jobs, GET /runs/ID, GET /runs/ID/logs?..., "
                      "POST /runs/ID/cancel|approve|reject, GET /locks, POST /locks/release, "
                      f"POST /webhooks/github{'' if webhook_secret else ' [disabled: no --webhook-secret]'})",
                      highlight=False, soft_wrap=True)
            err.print(f"events (one EventBridge event per line): {stack.events_log}", highlight=False, soft_wrap=True)
            err.print(f"metrics (one EMF document per line): {stack.metrics_log}", highlight=False, soft_wrap=True)
            if stack.scheduler is not None:
                err.print(f"schedules of on: schedule fire here (looked at every {schedule_interval:g}s)",
                          highlight=False)
            err.print(f"job signing secret (X-IacCi-Signature-256): {stack.webhook_secret}", highlight=False,
                      soft_wrap=True)
            # the handlers first: a supervisor that stops the server as soon as it prints its URL still gets
            # the clean shutdown (workers reaped, files removed), not the default death that orphans them
            stopped = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stopped.set())
            click.echo(http.url, nl=True)
            sys.stdout.flush()
            stopped.wait()
            err.print("stopping")
        stack.remove_own_files()
    finally:
        aws.stop()


from iac_ci.cli.init import init as _init  # noqa: E402  (iac-ci init, a command in a module of its own)

main.add_command(_init)

import iac_ci.cli.logs  # noqa: E402, F401, I001  (iac-ci logs registers itself on this group: target_options)

from iac_ci.cli.github_app import github_app_manifest as _github_app_manifest  # noqa: E402  (a module of its own)

main.add_command(_github_app_manifest)

import iac_ci.cli.certs  # noqa: E402, F401  (iac-ci certs: mutual TLS's CA; it registers itself on this group)
