"""Mutual TLS in real handshakes on loopback: ``iac-ci serve``'s server (``HttpApi`` with
``server_context``) in front of an embedded stack's intake, Python's ``ssl`` on both ends.

The handshake refuses what the truststore cannot vouch for (a certificate of another CA, an expired
one, none at all) before a byte of HTTP reaches the API; the intake's check then refuses what the
certificates table says (revoked, retired, never issued) with a 403. Certificates that must be
expired are issued with a clock set days back, never waited for.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from support.paths import REPO_ROOT
from support.waiting import wait_for

from iac_ci.certs import authority
from iac_ci.certs.lifecycle import Authority
from iac_ci.certs.store import CertResources, CertStore
from iac_ci.embedded.http_api import HttpApi, server_context
from iac_ci.embedded.stack import EmbeddedStack
from iac_ci.remote.client import ApiClient, StackError
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.intake.client_certs import ClientCertCheck
from lambda_runtime.schema.tables import CERTIFICATES

UNKNOWN_RUN = "0123456789abcdef"  # a well-formed run id nobody submitted: past the certificate check, a 404


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Counting:
    """The stack's API, counting the requests that reach it and keeping the certificate each carried."""

    def __init__(self, api: Any):
        self.api, self.events = api, []

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return self.api.handle(event, context)


def server_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as `openssl req -x509` would make one."""
    key = authority.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "server.pem").write_text(authority.info(cert).pem)
    (directory / "server.key").write_text(authority.key_pem(key))
    return directory / "server.pem", directory / "server.key"


@pytest.fixture(scope="module")
def stack(aws) -> EmbeddedStack:
    """The engine's intake on the embedded AWS (nothing runs: the requests only read)."""
    return EmbeddedStack(aws, prefix="m" + secrets.token_hex(4))


@dataclass
class World:
    ca: Authority
    store: CertStore
    clock: Clock
    api: Counting
    http: HttpApi
    dir: Path
    server_cert: Path
    server_key: Path
    secret: str


@pytest.fixture(scope="module")
def shared(aws) -> CertResources:
    """One truststore bucket and CA key for the module; each test has a table and names of its own."""
    res = CertResources.embedded("h" + secrets.token_hex(4))
    CertStore(AwsClients(region=aws.region), res).ensure_embedded()
    return res


@pytest.fixture()
def world(stack, clients, shared, tmp_path) -> Iterator[World]:
    """A CA of its own, a server trusting its truststore, and the intake checking its table."""
    tag = secrets.token_hex(4)
    res = dataclasses.replace(shared, table=f"{shared.table}-{tag}", truststore_key=f"{tag}/truststore.pem",
                              parameter_prefix=f"{shared.parameter_prefix}{tag}/")
    clients.dynamodb.create_table(**CERTIFICATES.create_table_kwargs(res.table))
    store = CertStore(clients, res)
    ca = Authority(store)
    ca.init()
    (tmp_path / "truststore.pem").write_text(store.truststore().text or "")
    cert, key = server_certificate(tmp_path)
    clock = Clock()
    stack.api.client_certs = ClientCertCheck(clients.dynamodb, res.table, clock=clock)
    api = Counting(stack.api)
    http = HttpApi(api, ssl_context=server_context(cert, key, tmp_path / "truststore.pem")).start()
    world = World(ca=ca, store=store, clock=clock, api=api, http=http, dir=tmp_path, server_cert=cert,
                  server_key=key, secret=stack.webhook_secret)
    yield world
    world.http.stop()  # the latest server: serve_truststore_from_s3 replaces it
    stack.api.client_certs = None


def serve_truststore_from_s3(world: World) -> None:
    """The truststore object the lifecycle wrote to S3, in a fresh server: API Gateway reads the object
    again when told its new version, while a server (``iac-ci serve --client-ca``) reads its client CA
    once, at start-up."""
    path = world.dir / "truststore.pem"
    path.write_text(world.store.truststore().text or "")
    world.http.stop()
    world.http = HttpApi(world.api, ssl_context=server_context(world.server_cert, world.server_key, path)).start()


def keep(world: World, name: str, as_name: str, *, alone: bool = False) -> None:
    """A copy of ``name``'s certificate files as ``as_name``; ``alone``: the certificate without the
    intermediate after it, so the server can only chain it through its truststore."""
    chain = (world.dir / f"{name}.pem").read_text()
    (world.dir / f"{as_name}.pem").write_text(authority.info(authority.load_cert(chain)).pem if alone else chain)
    (world.dir / f"{as_name}.key").write_text((world.dir / f"{name}.key").read_text())


def client_context(world: World, name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(world.server_cert))
    if name is not None:
        context.load_cert_chain(str(world.dir / f"{name}.pem"), str(world.dir / f"{name}.key"))
    return context


def status(world: World, name: str | None) -> tuple[int, dict[str, Any]]:
    """A signed ``GET /runs/<id>`` presenting ``name``'s certificate (``iac-ci status --cert --key``)."""
    client = ApiClient(world.http.url, world.secret, ssl_context=client_context(world, name), attempts=1)
    return client.status(UNKNOWN_RUN)


def refused_in_handshake(world: World, context: ssl.SSLContext) -> str:
    """Connect and send a request; the server must close the connection in the TLS handshake, before the
    API sees anything. Returns the server's reason."""
    reached = len(world.api.events)
    host, port = world.http.url.removeprefix("https://").split(":")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)), \
            socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as conn:
        conn.sendall(f"GET /runs/{UNKNOWN_RUN} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        conn.recv(1024)  # TLS 1.3: the client's side of the handshake is over; the refusal arrives here
    assert len(world.api.events) == reached
    return wait_for(lambda: world.http.refused_handshakes[-1:], what="the server's reason", timeout=10)[0]


def issue(world: World, name: str) -> Any:
    return world.ca.issue(name, out_dir=world.dir)


# ---- the handshake --------------------------------------------------------------------------------------
def test_an_active_certificate_reaches_the_api_with_its_identity(world) -> None:
    issued = issue(world, "ci")
    code, body = status(world, "ci")
    assert (code, body) == (404, {"error": f"run '{UNKNOWN_RUN}' not found"})  # past the certificate and on
    identity = world.api.events[-1]["requestContext"]["identity"]["clientCert"]
    assert identity["serialNumber"].replace(":", "").lstrip("0") == issued.serial
    assert identity["subjectDN"].startswith("CN=ci,O=")
    assert identity["clientCertPem"].startswith("-----BEGIN CERTIFICATE-----")


def test_a_certificate_of_another_ca_is_refused_in_the_handshake(world) -> None:
    now = time.time()
    root_key, key = authority.new_key(), authority.new_key()
    rogue_root = authority.root_ca(root_key, organization=world.store.resources.organization, now=now)
    rogue = authority.client_cert(key.public_key(), name="ci", issuer=rogue_root, issuer_key=root_key,
                                  not_before=now - 60, not_after=now + 3600)
    (world.dir / "rogue.pem").write_text(authority.bundle([authority.info(rogue).pem, authority.info(rogue_root).pem]))
    (world.dir / "rogue.key").write_text(authority.key_pem(key))
    assert refused_in_handshake(world, client_context(world, "rogue")) == "self-signed certificate in certificate chain"


def test_a_client_cannot_sign_itself_a_certificate_for_another_name(world) -> None:
    """The attack: a client signs a certificate for ``admin`` with its own key and presents the chain
    admin -> its own certificate -> the intermediate. Its certificate is no CA (basicConstraints)."""
    issue(world, "mallory")
    mallory = authority.load_cert((world.dir / "mallory.pem").read_text())
    mallory_key = authority.load_key((world.dir / "mallory.key").read_text())
    key, now = authority.new_key(), time.time()
    admin = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
             .issuer_name(mallory.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(datetime.datetime.fromtimestamp(now - 60, datetime.UTC))
             .not_valid_after(datetime.datetime.fromtimestamp(now + 3600, datetime.UTC))
             .sign(mallory_key, hashes.SHA256()))
    (world.dir / "admin.pem").write_text(authority.bundle([authority.info(admin).pem, (world.dir / "mallory.pem")
                                                           .read_text()]))
    (world.dir / "admin.key").write_text(authority.key_pem(key))
    assert refused_in_handshake(world, client_context(world, "admin")) == "invalid CA certificate"


def test_an_expired_certificate_is_refused_in_the_handshake(world) -> None:
    days_ago = Authority(world.store, clock=lambda: time.time() - 3 * 86_400)
    days_ago.issue("old", days=1, out_dir=world.dir)  # valid for one day, three days ago
    assert refused_in_handshake(world, client_context(world, "old")) == "certificate has expired"


def test_no_certificate_is_refused_in_the_handshake(world) -> None:
    assert refused_in_handshake(world, client_context(world, None)) == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


# ---- the revocation check behind it -----------------------------------------------------------------------
def test_a_revoked_certificate_is_refused_with_403(world) -> None:
    issue(world, "ci")
    assert status(world, "ci")[0] == 404
    world.ca.revoke("ci")
    world.clock.now += 6  # past the intake's 5 s lookup cache
    code, body = status(world, "ci")
    assert (code, body) == (403, {"error": "client certificate 'ci' is revoked"})


def test_a_certificate_the_ca_signed_but_never_recorded_is_refused_with_403(world) -> None:
    """Whoever gets hold of the intermediate's key (or a certificate a crash left unrecorded) passes the
    handshake, and still no request: the table does not know the serial."""
    state = world.store.state()
    inter = world.store.ca(state.current)
    inter_key = authority.load_key(world.store.get_key(inter.key_parameter))
    key, now = authority.new_key(), time.time()
    forged = authority.client_cert(key.public_key(), name="ci", issuer=authority.load_cert(inter.cert_pem),
                                   issuer_key=inter_key, not_before=now - 60, not_after=now + 3600)
    (world.dir / "forged.pem").write_text(authority.bundle([authority.info(forged).pem, inter.cert_pem]))
    (world.dir / "forged.key").write_text(authority.key_pem(key))
    code, body = status(world, "forged")
    assert code == 403 and body["error"].startswith("unknown client certificate")


def test_a_rotated_certificate_is_accepted_and_the_old_one_refused_once_retired(world) -> None:
    """After each step the server trusts the truststore the lifecycle wrote to S3. A client that sends its
    certificate alone is chained through that truststore in the handshake; one that sends the old
    intermediate with it (its NAME.pem) still chains to the root, which stays trusted: the certificates
    table refuses that one, with a 403."""
    issue(world, "ci")
    keep(world, "ci", "ci-old")
    keep(world, "ci", "ci-old-alone", alone=True)
    world.ca.apply_rotation(world.ca.plan_rotation(grace_days=1), out_dir=world.dir)  # rewrites ci.pem
    serve_truststore_from_s3(world)
    assert (world.dir / "ci.pem").read_text() != (world.dir / "ci-old.pem").read_text()
    keep(world, "ci", "ci-alone", alone=True)
    world.clock.now += 6
    assert status(world, "ci")[0] == 404  # the re-issued certificate, the same key
    assert status(world, "ci-alone")[0] == 404  # the new intermediate is in the truststore S3 holds
    assert status(world, "ci-old")[0] == 404 and status(world, "ci-old-alone")[0] == 404  # the grace period
    world.clock.now = world.store.state().retire_after + 1  # over, and nobody has retired the old one yet
    grace_over = "client certificate 'ci' is superseded and the grace period of the intermediate CA that issued it " \
                 "has ended"
    assert status(world, "ci-old-alone") == (403, {"error": grace_over})
    world.ca.apply_rotation(world.ca.plan_rotation(force=True), force=True)  # retire the old intermediate
    serve_truststore_from_s3(world)
    world.clock.now += 6
    assert status(world, "ci")[0] == 404 and status(world, "ci-alone")[0] == 404
    refused = refused_in_handshake(world, client_context(world, "ci-old-alone"))
    assert refused == "unable to get local issuer certificate"  # the old intermediate left the truststore
    assert status(world, "ci-old") == (403, {"error": "client certificate 'ci' is retired"})


def test_a_refused_certificate_is_reported_by_the_client_without_retries(world) -> None:
    client = ApiClient(world.http.url, world.secret, ssl_context=client_context(world, None), attempts=4,
                       sleep=lambda s: pytest.fail("a TLS refusal is not retried"))
    with pytest.raises(StackError, match="TLS with https://127.0.0.1:[0-9]+ failed: .*pass --cert/--key"):
        client.status(UNKNOWN_RUN)


# ---- iac-ci serve and the CLI, as the README shows them ------------------------------------------------------
def readme_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    return text[text.index("### Mutual TLS"):text.index("### Tearing down")]


def cli_env(aws) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IAC_CI_"))}
    env.update(aws.env())
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def test_serve_with_mutual_tls_and_the_cli_with_cert_and_key(aws, clients, tmp_path, monkeypatch) -> None:
    """``iac-ci serve`` is a process of its own; the other commands run in this one (the same click
    commands, in the README's order)."""
    from click.testing import CliRunner

    from iac_ci.cli import main

    env = cli_env(aws)
    prefix = "s" + secrets.token_hex(4)
    target = ["--endpoint-url", aws.endpoint, "--prefix", prefix]
    monkeypatch.chdir(tmp_path)

    def iac_ci(*args: str) -> Any:
        result = CliRunner().invoke(main, list(args))
        result.returncode = result.exit_code
        return result

    readme = readme_section()
    for shown in ("iac-ci certs init --endpoint-url http://127.0.0.1:5000 --truststore-out truststore.pem",
                  "iac-ci certs issue ci-runner --endpoint-url http://127.0.0.1:5000",
                  "--tls-cert server.pem --tls-key server.key --client-ca truststore.pem",
                  "--cert ci-runner.pem --key ci-runner.key --ca server.pem"):
        assert shown in readme  # what this test runs is what the README shows
    init = iac_ci("certs", "init", "--truststore-out", "truststore.pem", *target)
    assert init.returncode == 0, init.stderr
    assert iac_ci("certs", "issue", "ci-runner", *target).returncode == 0
    assert iac_ci("certs", "issue", "gone", *target).returncode == 0
    assert iac_ci("certs", "revoke", "gone", *target).returncode == 0
    [openssl] = [line for line in readme.splitlines() if line.startswith("openssl req -x509")]
    if shutil.which("openssl"):  # the README's server certificate, made as it says
        subprocess.run(shlex.split(openssl), cwd=tmp_path, check=True, capture_output=True, timeout=60)
    else:
        server_certificate(tmp_path)
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        ["iac-ci", "serve", "--port", "0", "--endpoint-url", aws.endpoint, "--tls-cert", "server.pem", "--tls-key",
         "server.key", "--client-ca", "truststore.pem", "--certs-table", f"{prefix}-certificates"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=tmp_path)
    try:
        url = serve.stdout.readline().strip() if serve.stdout else ""
        assert url.startswith("https://127.0.0.1:"), (tmp_path / "serve.log").read_text()[-2000:]
        secret = wait_for(lambda: [line.rsplit(": ", 1)[1] for line in (tmp_path / "serve.log").read_text().splitlines()
                                   if line.startswith("job signing secret")], what="the signing secret")[0]
        tls_args = ["--url", url, "--secret", secret, "--ca", "server.pem"]
        ok = iac_ci("status", UNKNOWN_RUN, *tls_args, "--cert", "ci-runner.pem", "--key", "ci-runner.key")
        assert ok.returncode == 2 and "not found" in ok.stderr, ok.stderr  # through mTLS to the route: unknown run
        revoked = iac_ci("status", UNKNOWN_RUN, *tls_args, "--cert", "gone.pem", "--key", "gone.key")
        assert revoked.returncode == 1 and "403" in revoked.stderr and "'gone' is revoked" in revoked.stderr
        none = iac_ci("status", UNKNOWN_RUN, *tls_args)
        assert none.returncode == 1 and "TLS with" in none.stderr and "--cert/--key" in none.stderr
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
    assert "mutual TLS: client certificates must chain to truststore.pem" in (tmp_path / "serve.log").read_text()


def test_serve_options_that_do_not_make_mutual_tls_are_refused(tmp_path) -> None:
    from click.testing import CliRunner

    from iac_ci.cli import main

    server_certificate(tmp_path)
    (tmp_path / "ca.pem").write_text("x")
    alone = CliRunner().invoke(main, ["serve", "--client-ca", str(tmp_path / "ca.pem")])
    assert alone.exit_code == 2 and "--client-ca needs --tls-cert and --tls-key" in alone.output
    half = CliRunner().invoke(main, ["serve", "--tls-cert", str(tmp_path / "server.pem")])
    assert half.exit_code == 2 and "--tls-cert and --tls-key go together" in half.output
    bad = CliRunner().invoke(main, ["serve", "--tls-cert", str(tmp_path / "server.pem"), "--tls-key",
                                    str(tmp_path / "server.key"), "--client-ca", str(tmp_path / "ca.pem")])
    assert bad.exit_code == 2 and "cannot load them" in bad.output
