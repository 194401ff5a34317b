"""``iac-ci certs``: the certificate authority of the API's mutual TLS (``iac_ci.certs``).

Against a deployed stack (``--stack``: the table, truststore, SSM prefix, KMS key and custom domain
come from its outputs, read with your AWS credentials; ``IacCiPipeline.grant_manage_certificates``)
or the embedded AWS (``--endpoint-url``: the names are options, defaulting to what ``iac-ci serve
--client-ca`` uses, and ``init`` creates the table, bucket and key if missing).

Exit codes: 0 done (or, for a dry run, planned); 1 AWS could not be reached or lacks a resource;
2 refused (bad input, a name already in use, an existing CA without ``--force``): nothing changed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from iac_ci.cli.main import EXIT_FAILED, EXIT_INVALID, main, region_option

if TYPE_CHECKING:
    from lambda_runtime.certs.records import CertRecord

RESOURCE_OPTIONS = ("table", "truststore_bucket", "truststore_key", "ca_parameter_prefix", "kms_key", "domain_name")


def _target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--stack", default=None, help="A deployed stack: the CA's resources come from its outputs."),
        region_option,
        click.option("--endpoint-url", default=None, help="The embedded AWS (a moto server) instead of a stack."),
        click.option("--prefix", default="iac-ci", show_default=True,
                     help="With --endpoint-url: the prefix of the default resource names."),
        click.option("--table", default=None, help="With --endpoint-url: the certificates table "
                                                   "[PREFIX-certificates]."),
        click.option("--truststore-bucket", default=None, help="With --endpoint-url: [PREFIX-truststore]."),
        click.option("--truststore-key", default=None, help="With --endpoint-url: [truststore.pem]."),
        click.option("--ca-parameter-prefix", default=None,
                     help="With --endpoint-url: SSM names of the CA keys [/iac-ci-engine/PREFIX/ca/]."),
        click.option("--kms-key", default=None, help="With --endpoint-url: KMS key of the CA keys [alias/PREFIX-ca]."),
        click.option("--domain-name", default=None,
                     help="With --endpoint-url: an API Gateway custom domain to tell each new truststore version."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _authority(opts: dict[str, Any], *, create: bool = False) -> Any:
    """The ``Authority`` of the target the options name (exit 2 when they name none, or two)."""
    from iac_ci.certs.lifecycle import Authority
    from iac_ci.certs.store import CertResources, CertStore, StoreError
    from lambda_runtime.aws.clients import AwsClients

    stack, endpoint = opts["stack"], opts["endpoint_url"]
    if (stack is None) == (endpoint is None):
        raise click.UsageError("give either --stack (a deployed stack) or --endpoint-url (the embedded AWS)")
    if stack is not None:
        given = [f"--{o.replace('_', '-')}" for o in RESOURCE_OPTIONS if opts[o] is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --endpoint-url (a stack's outputs name them)")
        import boto3

        from iac_ci.remote.client import StackError, StackInfo

        session = boto3.Session(region_name=opts["region"])
        try:
            info = StackInfo.from_cloudformation(stack, session.client("cloudformation"))
            resources = CertResources.from_outputs(stack, info.outputs)
        except (StackError, StoreError) as exc:
            raise click.ClickException(str(exc)) from None
        return Authority(CertStore(AwsClients(session), resources))
    from iac_ci.embedded.server import FAKE_CREDENTIALS

    for key, val in FAKE_CREDENTIALS.items():
        os.environ.setdefault(key, val)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    defaults = CertResources.embedded(opts["prefix"])
    resources = CertResources(
        table=opts["table"] or defaults.table,
        truststore_bucket=opts["truststore_bucket"] or defaults.truststore_bucket,
        truststore_key=opts["truststore_key"] or defaults.truststore_key,
        parameter_prefix=_prefix(opts["ca_parameter_prefix"]) or defaults.parameter_prefix,
        kms_key=opts["kms_key"] or defaults.kms_key, domain_name=opts["domain_name"],
        organization=defaults.organization)
    store = CertStore(AwsClients(region=opts["region"] or "us-east-1"), resources)
    if create:
        for created in store.ensure_embedded():
            Console(stderr=True).print(f"created {created}", highlight=False, markup=False)
    return Authority(store)


def _prefix(text: str | None) -> str | None:
    if text is None:
        return None
    if not text.startswith("/") or not text.endswith("/") or len(text) < 3:
        raise click.BadParameter("an SSM path that starts and ends with '/', e.g. /iac-ci-engine/dev/ca/",
                                 param_hint="--ca-parameter-prefix")
    return text


def _run(action: Callable[[], Any]) -> Any:
    """``action()``; a refusal exits 2 and an AWS failure 1, each with its message."""
    from iac_ci.certs.lifecycle import CertsError
    from iac_ci.certs.store import StoreError

    err = Console(stderr=True)
    try:
        return action()
    except CertsError as exc:
        err.print(f"[red]refused:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_INVALID)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(exc, BotoCoreError | ClientError):
            raise
        err.print(f"[red]AWS error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)


def _say(lines: list[str]) -> None:
    err = Console(stderr=True)
    for line in lines:
        err.print(line, highlight=False, markup=False, soft_wrap=True)


def _warn(lines: list[str]) -> None:
    """On stderr, each line marked: what the command did is done, and this needs attention."""
    _say([f"warning: {line}" for line in lines])


def _write_truststore(authority: Any, path: Path | None) -> None:
    """A local copy of the truststore the table implies (``iac-ci serve --client-ca``)."""
    if path is None:
        return
    path.write_text(authority.expected_truststore(authority.require_state()))
    _say([f"truststore copied to {path}"])


truststore_out_option = click.option(
    "--truststore-out", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Also write the truststore (root + trusted intermediates) to this file, e.g. for iac-ci serve --client-ca.")


@main.group()
def certs() -> None:
    """Client certificates for the API's mutual TLS: a root and an intermediate CA, then one
    certificate per client; rotate the intermediate, revoke a client."""


@certs.command("init")
@click.option("--force", is_flag=True, help="Replace an existing CA: every certificate it issued stops working.")
@truststore_out_option
@_target_options
def init_command(force: bool, truststore_out: Path | None, **opts: Any) -> None:
    """Create the root and intermediate CAs (keys in SSM SecureString, KMS-encrypted) and publish the
    truststore (S3; API Gateway told its version). Refused over an existing CA without --force."""
    authority = _authority(opts, create=opts["endpoint_url"] is not None)
    _say(_run(lambda: authority.init(force=force)))
    _warn(authority.warnings)
    _run(lambda: _write_truststore(authority, truststore_out))


@certs.command("issue")
@click.argument("name")
@click.option("--days", type=int, default=365, show_default=True, help="Validity (at most the intermediate's).")
@click.option("--csr", "csr_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Sign this PEM certificate signing request: the client's private key never leaves the client.")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True,
              help="Where NAME.pem (certificate + intermediate) and NAME.key (0600, without --csr) are written.")
@click.option("--json", "as_json", is_flag=True, help="Print {name, serial, not_after, cert, key} on stdout.")
@_target_options
def issue_command(name: str, days: int, csr_file: Path | None, out_dir: Path, as_json: bool, **opts: Any) -> None:
    """Issue a client certificate NAME, signed by the current intermediate; refused while NAME has an
    active one."""
    from iac_ci.certs.lifecycle import CertsError, check_name

    try:
        check_name(name)  # before any AWS call
    except CertsError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    csr = csr_file.read_bytes() if csr_file is not None else None
    authority = _authority(opts)
    issued = _run(lambda: authority.issue(name, days=days, csr=csr, out_dir=out_dir))
    lines = [f"issued '{issued.name}': serial {issued.serial}, valid until {_date(issued.not_after)}",
             f"  certificate and chain: {issued.cert_path}"]
    if issued.key_path is not None:
        lines.append(f"  private key (0600): {issued.key_path}")
    _say(lines)
    if as_json:
        click.echo(json.dumps({"name": issued.name, "serial": issued.serial, "not_after": issued.not_after,
                               "cert": str(issued.cert_path),
                               "key": str(issued.key_path) if issued.key_path else None}))


@certs.command("rotate-intermediate")
@click.option("--apply", "apply_", is_flag=True, help="Do it (without: print what would change, change nothing).")
@click.option("--grace-days", type=float, default=7, show_default=True,
              help="How long the old intermediate and its certificates stay trusted after a rotation.")
@click.option("--force", is_flag=True, help="Retire the old intermediate before its grace period ends.")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True,
              help="Where the re-issued NAME.pem files are written (hand each to its client).")
@truststore_out_option
@_target_options
def rotate_command(apply_: bool, grace_days: float, force: bool, out_dir: Path, truststore_out: Path | None,
                   **opts: Any) -> None:
    """Rotate the intermediate CA in two steps, each a dry run unless --apply: first a new intermediate
    and every active certificate re-issued under it (same keys), both trusted for --grace-days; then
    the old one retired."""
    authority = _authority(opts)
    plan = _run(lambda: authority.plan_rotation(grace_days=grace_days, force=force))
    if not apply_:
        _say(["dry run: nothing was changed; with --apply:", *plan.lines])
        if plan.blocked:
            _say([f"--apply would be refused: {plan.blocked}"])
        return
    _say(_run(lambda: authority.apply_rotation(plan, force=force, out_dir=out_dir)))
    _warn(authority.warnings)
    if plan.kind in ("resume", "converge"):
        _say(["finished what an earlier run left; run rotate-intermediate again for its next step"])
    _run(lambda: _write_truststore(authority, truststore_out))


@certs.command("revoke")
@click.argument("name")
@_target_options
def revoke_command(name: str, **opts: Any) -> None:
    """Revoke NAME's certificate (and those a rotation superseded): the API refuses it from now on."""
    authority = _authority(opts)
    _say(_run(lambda: authority.revoke(name)))


@certs.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also revoked, retired and superseded certificates.")
@click.option("--json", "as_json", is_flag=True, help="Print the certificates as JSON on stdout.")
@_target_options
def list_command(show_all: bool, as_json: bool, **opts: Any) -> None:
    """The client certificates: name, serial, status (an active one past its expiry: expired), expiry,
    issuing intermediate; then what needs attention (a CA about to expire, a grace period over, API
    Gateway's truststore warnings)."""
    from rich.table import Table

    authority = _authority(opts)
    found = [c for c in _run(authority.store.certs) if show_all or c.status.value == "active"]
    now = authority.clock()
    if as_json:
        click.echo(json.dumps({"certificates": [
            {"name": c.name, "serial": c.serial, "status": _status(c, now), "not_after": c.not_after,
             "issuer": c.issuer, "fingerprint": c.fingerprint} for c in found]}))
    else:
        table = Table(title=f"{len(found)} certificate{'s' if len(found) != 1 else ''}", title_justify="left")
        for column in ("name", "serial", "status", "valid until", "issuer"):
            table.add_column(column, overflow="fold")
        for c in found:
            table.add_row(c.name, c.serial[:12], _status(c, now), _date(c.not_after), c.issuer[:12])
        Console(stderr=True).print(table)
    _warn(_run(authority.checkup))


def _status(cert: CertRecord, now: float) -> str:
    """``expired`` for an active certificate past its expiry: the table still says active (nothing writes
    at expiry), and the handshake refuses it."""
    return "expired" if cert.status.value == "active" and cert.expired(now) else cert.status.value


def _date(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
