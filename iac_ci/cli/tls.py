"""The client side of mutual TLS for every signed command: ``--cert``, ``--key`` and ``--ca``.

``target_options`` (``iac_ci.cli.main``) adds these three to each command that talks to the API.
They do not become parameters of the commands: their values are kept in the click context, and
``client_context`` turns them into the ``ssl.SSLContext`` the API client connects with
(``ApiClient(ssl_context=...)``), so a command needs no code of its own for them.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import click

META_KEY = "iac_ci.tls"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.meta.setdefault(META_KEY, {})[param.name] = value
    return value


def _option(flag: str, envvar: str, help_text: str) -> Any:
    return click.option(flag, envvar=envvar, default=None, expose_value=False, callback=_remember,
                        type=click.Path(path_type=Path, dir_okay=False), help=help_text)


options = (
    _option("--cert", "IAC_CI_CLIENT_CERT", "Client certificate (PEM, with its chain: NAME.pem of `iac-ci certs "
            "issue`) for an API with mutual TLS."),
    _option("--key", "IAC_CI_CLIENT_KEY", "Private key of --cert (NAME.key); default: in the --cert file."),
    _option("--ca", "IAC_CI_CA_BUNDLE", "CA certificates (PEM) to trust the server with, e.g. the certificate of "
            "an `iac-ci serve --tls-cert`; default: the system's trusted CAs."),
)


def client_options(command: Any) -> Any:
    """``--cert``, ``--key`` and ``--ca`` on a command outside ``target_options`` (``iac-ci smoke``)."""
    for option in reversed(options):
        command = option(command)
    return command


def client_context(ctx: click.Context | None = None) -> ssl.SSLContext | None:
    """The context of the current command's ``--cert/--key/--ca``; None when none was given."""
    ctx = ctx or click.get_current_context(silent=True)
    given: dict[str, Path] = ctx.meta.get(META_KEY, {}) if ctx is not None else {}  # meta: shared by nested contexts
    if not given:
        return None
    cert, key, ca = given.get("cert"), given.get("key"), given.get("ca")
    if key is not None and cert is None:
        raise click.UsageError("--key needs --cert (the certificate of that key)")
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise click.BadParameter(f"{ca}: not a readable PEM file of CA certificates ({exc})",
                                 param_hint="--ca") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key) if key is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise click.BadParameter(f"{cert}{f' and {key}' if key else ''}: not a PEM certificate and its "
                                     f"private key ({exc})", param_hint="--cert/--key") from None
    return context


# ---- the server side: ``iac-ci serve --tls-cert --tls-key --client-ca`` ----------------------------------
def _server_option(flag: str, help_text: str) -> Any:
    return click.option(flag, default=None, type=click.Path(path_type=Path, dir_okay=False, exists=True),
                        help=help_text)


_SERVER_OPTIONS = (
    _server_option("--tls-cert", "Serve HTTPS with this certificate (PEM, with its chain)."),
    _server_option("--tls-key", "The private key of --tls-cert."),
    _server_option("--client-ca", "Mutual TLS: the truststore (root + intermediates, PEM; `iac-ci certs init "
                   "--truststore-out`) client certificates must chain to; each request's certificate is then "
                   "also checked against --certs-table, as a deployed stack checks it. Read once, at start-up: "
                   "after `iac-ci certs rotate-intermediate --apply --truststore-out FILE`, restart serve."),
    click.option("--certs-table", default="iac-ci-certificates", show_default=True,
                 help="With --client-ca: the certificates table of `iac-ci certs --endpoint-url`."),
)


def server_options(command: Any) -> Any:
    """``--tls-cert``, ``--tls-key``, ``--client-ca`` and ``--certs-table`` of ``iac-ci serve``."""
    for option in reversed(_SERVER_OPTIONS):
        command = option(command)
    return command


def server_context(tls_cert: Path | None, tls_key: Path | None, client_ca: Path | None) -> ssl.SSLContext | None:
    """The serve's TLS context (None: plain HTTP); bad options are a usage error (exit 2)."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_cert is None or tls_key is None:
        if client_ca is not None:
            raise click.UsageError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
        return None
    from iac_ci.embedded.http_api import server_context as build

    try:
        return build(tls_cert, tls_key, client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise click.BadParameter(f"cannot load them: {exc}", param_hint="--tls-cert/--tls-key/--client-ca") from None


def check_client_certs(stack: Any, table: str) -> None:
    """Turn on the revocation check of ``stack``'s API (``intake.client_certs``) against ``table``,
    which must exist (``iac-ci certs init --endpoint-url`` creates it)."""
    from lambda_runtime.aws.clients import error_code
    from lambda_runtime.intake.client_certs import ClientCertCheck

    try:
        stack.clients.dynamodb.describe_table(TableName=table)
    except Exception as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        raise click.BadParameter(f"table '{table}' does not exist on this AWS endpoint: run `iac-ci certs init "
                                 "--endpoint-url URL` against the same --endpoint-url first",
                                 param_hint="--certs-table") from None
    stack.api.client_certs = ClientCertCheck(stack.clients.dynamodb, table)
