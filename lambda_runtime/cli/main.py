"""The ``iac-ci`` command.

Exit codes: 0 the job succeeded (or the file is valid); 1 it failed, timed out or was
cancelled; 2 the job file is invalid (the message names order and field).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from lambda_runtime.cli.jobfile import JobFileError, load_job_file, prepare
from lambda_runtime.cli.progress import Progress, orders_table
from lambda_runtime.job.model import Job
from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job
from lambda_runtime.schema.contract import LOG_TAIL_CHARS

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EMBEDDED_ROLE_PATTERN = "arn:aws:iam::123456789012:role/*"


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, val = v.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got '{v}'", param_hint=option)
        out[name] = val
    return out


def _load_or_exit(path: Path, policy: ValidationPolicy, err: Console) -> tuple[dict[str, Any], Job]:
    try:
        doc = prepare(load_job_file(path), path.parent)
        return doc, parse_job(doc, policy)
    except JobFileError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
    except JobValidationError as exc:
        err.print(f"[red]invalid job[/] {path}:", highlight=False)
        for p in exc.problems:
            err.print(f"  - {p}", highlight=False, markup=False)
    sys.exit(EXIT_INVALID)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """iac-ci: serverless continuous delivery for infrastructure as code."""


@main.command()
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
def validate(job_file: Path) -> None:
    """Check a job file; exit 0 if valid, 2 with every problem listed if not."""
    err = Console(stderr=True)
    _, job = _load_or_exit(
        job_file, ValidationPolicy(allow_local_sources=True, role_arn_patterns=(EMBEDDED_ROLE_PATTERN,)), err
    )
    err.print(f"[green]valid[/]: job '{job.name}' with {len(job.orders)} orders", highlight=False)


@main.command()
def schema() -> None:
    """Print the JSON Schema of the job file."""
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
def run(
    job_file: Path,
    as_json: bool,
    ssm: tuple[str, ...],
    secret: tuple[str, ...],
    endpoint_url: str | None,
    allow_role: tuple[str, ...],
    wait_timeout: float | None,
    quiet: bool,
) -> None:
    """Run JOB_FILE end to end on an embedded AWS (moto on loopback, workers as local processes)."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # the table is the output; JSON logs with --verbose
    err = Console(stderr=True)
    ssm_values, secret_values = _pairs(ssm, "--ssm"), _pairs(secret, "--secret")
    roles = (EMBEDDED_ROLE_PATTERN, *allow_role)
    policy = ValidationPolicy(
        allow_local_sources=True,
        role_arn_patterns=roles,
        allowed_exact=frozenset(ssm_values) | frozenset(secret_values),
    )
    doc, job = _load_or_exit(job_file, policy, err)

    from lambda_runtime.embedded.server import EmbeddedAws
    from lambda_runtime.embedded.stack import EmbeddedStack
    from lambda_runtime.logs import logger

    logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"])

    aws = EmbeddedAws.attach(endpoint_url) if endpoint_url else EmbeddedAws.start()
    stack = EmbeddedStack(
        aws,
        settings_overrides={"allowed_role_arns": roles, "allowed_exact_refs": tuple(ssm_values) + tuple(secret_values)},
    )
    try:
        for name, val in ssm_values.items():
            stack.clients.ssm.put_parameter(Name=name, Value=val, Type="SecureString", Overwrite=True)
        for sid, val in secret_values.items():
            _put_secret(stack.clients.secrets, sid, val)
        with stack:
            code, body = stack.submit(doc)
            if code != 202:
                err.print(f"[red]rejected ({code})[/]: {body.get('error')}", highlight=False)
                for p in body.get("problems", []):
                    err.print(f"  - order '{p['order']}': {p['field']}: {p['message']}", markup=False)
                sys.exit(EXIT_INVALID if code in (400, 413, 422) else EXIT_FAILED)
            run_id = body["run_id"]
            err.print(
                f"run [bold]{run_id}[/] accepted ({len(job.orders)} orders); trace {body['trace_id']}", highlight=False
            )
            done = _follow(stack, run_id, err, live=not quiet and err.is_terminal, wait_timeout=wait_timeout)
    finally:
        aws.stop()
    err.print(orders_table(done, title=f"run {done['run_id']}: {done['status']}"))
    if done.get("error"):
        err.print(f"[red]error:[/] {done['error']}", highlight=False, markup=False)
    if as_json:
        click.echo(json.dumps(json_result(done)))
    sys.exit(EXIT_OK if done["status"] == "succeeded" else EXIT_FAILED)


def _follow(stack: Any, run_id: str, err: Console, *, live: bool, wait_timeout: float | None) -> dict[str, Any]:
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
            while True:
                try:
                    return stack.wait(run_id, timeout=wait_timeout or 10**9,
                                      on_progress=progress.update if live else None)
                except KeyboardInterrupt:
                    err.print("[yellow]cancelling...[/]")
                    stack.cancel(run_id)
                except TimeoutError:
                    err.print("[yellow]gave up waiting; cancelling...[/]")
                    stack.cancel(run_id)
                    wait_timeout = None
    finally:
        signal.signal(signal.SIGINT, previous)


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
