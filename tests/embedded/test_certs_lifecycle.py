"""``iac-ci certs`` on the embedded AWS: init, issue, rotate (a dry run first), revoke, and what the API
decides at each step; then a crash at every checkpoint of every command, and the run that recovers.

The API's side is the intake function's own check (``ClientCertCheck``) on the proxy event API Gateway
would send for each certificate (``apigw.client_cert_context``), against the same table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import botocore.handlers
import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from support.faults.aws_faults import LostResponses
from support.paths import REPO_ROOT

from iac_ci.certs import authority
from iac_ci.certs.lifecycle import Authority, CertsError
from iac_ci.certs.store import CertResources, CertStore
from iac_ci.cli import main
from iac_ci.embedded.apigw import client_cert_context, proxy_event
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.certs.records import CaStatus, CertStatus, ca_pk
from lambda_runtime.intake.client_certs import ClientCertCheck
from lambda_runtime.schema import deployment
from lambda_runtime.schema.tables import CERTIFICATES


def readme_csr_command() -> str:
    """The README's `openssl req -new ...` making a client's key and CSR."""
    [command] = re.findall(r"`(openssl req -new [^`]+)`", (REPO_ROOT / "README.md").read_text())
    return command


class Killed(BaseException):
    """The process died at this checkpoint: nothing after it runs, no clean-up either."""


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def shared(aws) -> CertResources:
    """One versioned truststore bucket and CA key for the module; each test has its own table, truststore
    object and SSM prefix in them."""
    res = CertResources.embedded("c" + secrets.token_hex(4))
    CertStore(AwsClients(region=aws.region), res).ensure_embedded()
    return res


@pytest.fixture()
def resources(clients, shared) -> CertResources:
    tag = secrets.token_hex(4)
    res = dataclasses.replace(shared, table=f"{shared.table}-{tag}", truststore_key=f"{tag}/truststore.pem",
                              parameter_prefix=f"{shared.parameter_prefix}{tag}/")
    clients.dynamodb.create_table(**CERTIFICATES.create_table_kwargs(res.table))
    return res


@pytest.fixture()
def store(clients, resources) -> CertStore:
    return CertStore(clients, resources)


def certs_cli(aws, res: CertResources, *args: str) -> Any:
    """``iac-ci certs ARGS`` against the embedded AWS, in this process."""
    return CliRunner().invoke(main, [
        "certs", *args, "--endpoint-url", aws.endpoint, "--table", res.table, "--truststore-bucket",
        res.truststore_bucket, "--truststore-key", res.truststore_key, "--ca-parameter-prefix", res.parameter_prefix,
        "--kms-key", res.kms_key])


def verdict(check: ClientCertCheck, pem_chain: str) -> str:
    """What the API answers a request presenting the first certificate of ``pem_chain``: 'ok', or the 403's
    reason."""
    der = authority.load_cert(pem_chain).public_bytes(serialization.Encoding.DER)
    refused = check.refusal(proxy_event("GET", "/runs/x", client_cert=client_cert_context(der)))
    return "ok" if refused is None else json.loads(refused["body"])["error"]


def snapshot(store: CertStore, clients) -> dict[str, Any]:
    """Everything the CA has written: table items, SSM names and versions, truststore object versions."""
    res = store.resources
    items = clients.dynamodb.scan(TableName=res.table, ConsistentRead=True)["Items"]
    params = clients.ssm.get_parameters_by_path(Path=res.parameter_prefix, Recursive=True)["Parameters"]
    versions = clients.s3.list_object_versions(Bucket=res.truststore_bucket, Prefix=res.truststore_key).get(
        "Versions", [])
    return {"items": sorted(json.dumps(i, sort_keys=True) for i in items),
            "params": sorted((p["Name"], p["Version"]) for p in params),
            "truststore": sorted(v["VersionId"] for v in versions)}


def truststore_certs(store: CertStore) -> list[str]:
    text = store.truststore().text or ""
    return [authority.info(authority.load_cert(block + "-----END CERTIFICATE-----\n")).serial
            for block in text.split("-----END CERTIFICATE-----\n") if block.strip()]


# ---- the whole lifecycle, through the CLI --------------------------------------------------------------
def test_init_issue_rotate_revoke(aws, clients, resources, store, tmp_path) -> None:
    check = ClientCertCheck(clients.dynamodb, resources.table, cache_seconds=0)
    out = tmp_path / "clients"

    # init: a root and an intermediate, keys in SSM SecureString under the CA's KMS key, the truststore
    trust_copy = tmp_path / "truststore.pem"
    result = certs_cli(aws, resources, "init", "--truststore-out", str(trust_copy))
    assert result.exit_code == 0, result.output
    state = store.state()
    assert state is not None and state.retiring is None and state.next is None
    for serial in (state.root, state.current):
        ca = store.ca(serial)
        param = clients.ssm.get_parameter(Name=ca.key_parameter)["Parameter"]
        assert param["Type"] == "SecureString" and ca.key_parameter.startswith(resources.parameter_prefix)
        assert f"kms:{resources.kms_key}:" in param["Value"]  # moto shows the key it encrypted with
        assert "PRIVATE KEY" in clients.ssm.get_parameter(Name=ca.key_parameter, WithDecryption=True)[
            "Parameter"]["Value"]
    assert truststore_certs(store) == [state.root, state.current]
    assert trust_copy.read_text() == store.truststore().text

    # a second init over it is refused and changes nothing
    before = snapshot(store, clients)
    again = certs_cli(aws, resources, "init")
    assert again.exit_code == 2 and "a certificate authority exists" in again.output
    assert snapshot(store, clients) == before

    # issue: key 0600 + certificate with its chain; a duplicate active name is refused
    result = certs_cli(aws, resources, "issue", "ci", "--out-dir", str(out), "--json")
    assert result.exit_code == 0, result.output
    issued = json.loads(result.stdout)
    key_file, cert_file = Path(issued["key"]), Path(issued["cert"])
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    chain = cert_file.read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2
    record = store.cert(issued["serial"])
    assert record is not None and record.status is CertStatus.ACTIVE and record.issuer == state.current
    assert record.fingerprint == authority.fingerprint_of_pem(chain)
    assert verdict(check, chain) == "ok"
    dup = certs_cli(aws, resources, "issue", "ci", "--out-dir", str(tmp_path / "elsewhere"))
    assert dup.exit_code == 2 and "'ci' has an active certificate" in dup.output
    assert not (tmp_path / "elsewhere" / "ci.key").exists()

    # --csr: the client keeps its key; the certificate is for the CSR's public key (made as the README says)
    csr_file = tmp_path / "laptop.csr"
    if shutil.which("openssl"):
        subprocess.run(shlex.split(readme_csr_command()), cwd=tmp_path, check=True, capture_output=True, timeout=60)
        client_key = serialization.load_pem_private_key((tmp_path / "laptop.key").read_bytes(), password=None)
    else:
        client_key = authority.new_key()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever the client asks")]))
               .sign(client_key, hashes.SHA256()))
        csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result = certs_cli(aws, resources, "issue", "laptop", "--csr", str(csr_file), "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    assert not (out / "laptop.key").exists()
    laptop_chain = (out / "laptop.pem").read_text()
    laptop = authority.load_cert(laptop_chain)
    assert laptop.public_key() == client_key.public_key()
    assert laptop.subject.rfc4514_string().startswith("CN=laptop,")  # the CA names it, not the request

    # rotate, dry run: says what it would do, changes nothing
    before = snapshot(store, clients)
    dry = certs_cli(aws, resources, "rotate-intermediate", "--grace-days", "1", "--out-dir", str(out))
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing was changed" in dry.output
    assert "re-issue 2 active client certificates" in dry.output
    assert f"ci: serial {record.serial[:12]}" in dry.output and "laptop: serial" in dry.output
    assert f"truststore {resources.truststore_uri}: root {state.root[:12]} + intermediates {state.current[:12]} " \
           "+ <new>" in dry.output
    assert snapshot(store, clients) == before
    assert (out / "ci.pem").read_text() == chain

    # rotate --apply: a new intermediate; both certificates re-issued with the same keys; both trusted
    applied = certs_cli(aws, resources, "rotate-intermediate", "--apply", "--grace-days", "1", "--out-dir", str(out))
    assert applied.exit_code == 0, applied.output
    rotated = store.state()
    assert rotated.retiring == state.current and rotated.current != state.current
    assert truststore_certs(store) == [state.root, state.current, rotated.current]
    new_chain = (out / "ci.pem").read_text()
    new_ci = authority.load_cert(new_chain)
    assert new_ci.public_key() == authority.load_cert(chain).public_key()
    assert authority.info(new_ci).serial != record.serial
    assert new_ci.not_valid_after_utc == authority.load_cert(chain).not_valid_after_utc
    assert store.cert(record.serial).status is CertStatus.SUPERSEDED
    assert (verdict(check, chain), verdict(check, new_chain), verdict(check, (out / "laptop.pem").read_text())) == (
        "ok", "ok", "ok")

    # the next --apply retires the old intermediate (--force: before its day of grace ends): its certificates
    # are refused
    dry = certs_cli(aws, resources, "rotate-intermediate")
    assert f"retire intermediate CA {state.current[:12]}" in dry.output
    assert f"certificate 'ci' (serial {record.serial[:12]}, superseded) stops working" in dry.output
    retired = certs_cli(aws, resources, "rotate-intermediate", "--apply", "--force")
    assert retired.exit_code == 0, retired.output
    assert truststore_certs(store) == [state.root, rotated.current]
    assert store.ca(state.current).status is CaStatus.RETIRED
    assert not store.key_exists(store.ca(state.current).key_parameter)
    assert verdict(check, chain) == "client certificate 'ci' is retired"
    assert verdict(check, new_chain) == "ok"

    # revoke: refused at once; the name is free again; revoking twice is refused
    result = certs_cli(aws, resources, "revoke", "ci")
    assert result.exit_code == 0, result.output
    assert verdict(check, new_chain) == "client certificate 'ci' is revoked"
    assert certs_cli(aws, resources, "revoke", "ci").exit_code == 2
    listed = certs_cli(aws, resources, "list", "--all", "--json")
    statuses = sorted((c["name"], c["status"]) for c in json.loads(listed.stdout)["certificates"])
    assert statuses == [("ci", "retired"), ("ci", "revoked"), ("laptop", "active"), ("laptop", "retired")]


def test_bad_input_is_refused_before_anything_is_written(aws, clients, resources, store, tmp_path) -> None:
    assert certs_cli(aws, resources, "issue", "ci").exit_code == 2  # no CA yet
    assert certs_cli(aws, resources, "init").exit_code == 0
    before = snapshot(store, clients)
    bad_name = certs_cli(aws, resources, "issue", "../etc", "--out-dir", str(tmp_path))
    assert bad_name.exit_code == 2 and "NAME" in bad_name.output
    (tmp_path / "bad.csr").write_text("not a request")
    bad_csr = certs_cli(aws, resources, "issue", "ci", "--csr", str(tmp_path / "bad.csr"), "--out-dir",
                        str(tmp_path))
    assert bad_csr.exit_code == 2 and "--csr: not a PEM certificate signing request" in bad_csr.output
    days = certs_cli(aws, resources, "issue", "ci", "--days", "0", "--out-dir", str(tmp_path))
    assert days.exit_code == 2 and "--days" in days.output
    both = CliRunner().invoke(main, ["certs", "list", "--stack", "S", "--endpoint-url", aws.endpoint])
    assert both.exit_code == 2 and "either --stack" in both.output
    names = CliRunner().invoke(main, ["certs", "list", "--stack", "S", "--table", "t"])
    assert names.exit_code == 2 and "--table: only with --endpoint-url" in names.output
    assert snapshot(store, clients) == before
    assert list(tmp_path.glob("ci.*")) == []


def test_init_force_replaces_the_ca_and_ends_everything_the_old_one_issued(clients, store, tmp_path) -> None:
    ca = Authority(store)
    ca.init()
    old = ca.issue("ci", out_dir=tmp_path / "old").cert_path.read_text()
    before = store.state()
    ca.init(force=True)
    after = store.state()
    check = ClientCertCheck(clients.dynamodb, store.resources.table, cache_seconds=0)
    assert verdict(check, old) == "client certificate 'ci' is retired"
    assert truststore_certs(store) == [after.root, after.current]
    assert all(not store.key_exists(store.ca(s).key_parameter) for s in (before.root, before.current))
    again = ca.issue("ci", out_dir=tmp_path / "new")  # the name is free again
    assert verdict(check, again.cert_path.read_text()) == "ok"
    settled(ca)


def test_a_revocation_reaches_a_warm_api_within_its_cache_time(clients, store, tmp_path) -> None:
    clock = Clock()
    ca = Authority(store)
    ca.init()
    issued = ca.issue("ci", out_dir=tmp_path)
    chain = issued.cert_path.read_text()
    check = ClientCertCheck(clients.dynamodb, store.resources.table, clock=clock)  # 5 s, as deployed
    assert verdict(check, chain) == "ok"
    ca.revoke("ci")
    assert verdict(check, chain) == "ok"  # the lookup is cached for 5 s ...
    clock.now += 5.5
    assert verdict(check, chain) == "client certificate 'ci' is revoked"  # ... and no longer


class FakeDomain:
    """API Gateway's side of UpdateDomainName and GetDomainName: moto implements neither for mutual TLS,
    so the requests are taken at the wire (botocore's before-send) and answered as API Gateway answers."""

    def __init__(self, apigw: Any, uri: str, *, warnings: tuple[str, ...] = ()):
        self.apigw, self.sent = apigw, []
        self.domain: dict[str, Any] = {"domainName": "ci.example.com", "mutualTlsAuthentication": {
            "truststoreUri": uri, "truststoreVersion": "deployed"}}
        if warnings:  # what API Gateway answers for a truststore holding a certificate it cannot use
            self.domain["mutualTlsAuthentication"]["truststoreWarnings"] = list(warnings)

    def __enter__(self) -> FakeDomain:
        self.apigw.meta.events.register("before-send.api-gateway", self._answer)
        return self

    def everywhere(self, monkeypatch: pytest.MonkeyPatch) -> FakeDomain:
        """Also for the clients a CLI command makes itself: each new botocore session registers the
        built-in handlers."""
        monkeypatch.setattr(botocore.handlers, "BUILTIN_HANDLERS",
                            [*botocore.handlers.BUILTIN_HANDLERS, ("before-send.api-gateway", self._answer)])
        return self

    def __exit__(self, *exc: object) -> None:
        self.apigw.meta.events.unregister("before-send.api-gateway", self._answer)

    def _answer(self, request: Any, **_kw: Any) -> AWSResponse:
        body = json.loads(request.body or b"{}")
        self.sent.append((request.method, request.url.split("/domainnames/")[-1], body))
        for patch in body.get("patchOperations", []):
            self.domain["mutualTlsAuthentication"][patch["path"].rsplit("/", 1)[1]] = patch["value"]
        return AWSResponse(request.url, 200, {"Content-Type": "application/json"},
                           _Raw(json.dumps(self.domain).encode()))

    @property
    def patches(self) -> list[Any]:
        return [body["patchOperations"] for method, _, body in self.sent if method == "PATCH"]


def test_each_new_truststore_version_is_given_to_api_gateway(clients, resources, tmp_path) -> None:
    store = CertStore(clients, dataclasses.replace(resources, domain_name="ci.example.com"))
    with FakeDomain(clients.client("apigateway"), resources.truststore_uri) as api_gateway:
        ca = Authority(store)
        ca.init()
        first = store.truststore().version
        ca.issue("ci", out_dir=tmp_path)
        ca.apply_rotation(ca.plan_rotation(grace_days=0), out_dir=tmp_path)
        second = store.truststore().version
        assert ca.pending(store.state()) == []  # API Gateway is on the latest version: nothing to redo
    assert api_gateway.patches == [
        [{"op": "replace", "path": "/mutualTlsAuthentication/truststoreVersion", "value": v}] for v in (first, second)]
    assert first != second and all(path == "ci.example.com" for _, path, _ in api_gateway.sent)


def test_an_unversioned_truststore_is_read_anew_through_its_uri(clients, resources, tmp_path) -> None:
    bucket = "u" + secrets.token_hex(6)
    clients.s3.create_bucket(Bucket=bucket)  # no versioning
    res = dataclasses.replace(resources, truststore_bucket=bucket, domain_name="ci.example.com")
    with FakeDomain(clients.client("apigateway"), res.truststore_uri) as api_gateway:
        Authority(CertStore(clients, res)).init()
    assert api_gateway.patches == [[{"op": "replace", "path": "/mutualTlsAuthentication/truststoreUri",
                                     "value": f"s3://{bucket}/{res.truststore_key}"}]]


def test_a_deployed_stack_is_found_through_its_outputs(aws, clients, resources) -> None:
    """``--stack``: the names come from the stack's outputs (here a CloudFormation stack of moto's
    whose outputs name this test's resources), read with the caller's credentials."""
    name = "mtls-" + secrets.token_hex(3)
    outputs = {deployment.OUTPUT_CERTIFICATES_TABLE: resources.table,
               deployment.OUTPUT_TRUSTSTORE_URI: resources.truststore_uri,
               deployment.OUTPUT_CA_PARAMETER_PREFIX: resources.parameter_prefix,
               deployment.OUTPUT_CA_KEY_ARN: resources.kms_key,
               deployment.OUTPUT_API_URL: "https://ci.example.com/", deployment.OUTPUT_WEBHOOK_SECRET_ARN: "arn:x"}
    clients.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps({
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()}}))
    result = CliRunner().invoke(main, ["certs", "init", "--stack", name])
    assert result.exit_code == 0, result.output
    assert CertStore(clients, resources).state() is not None
    root = CertStore(clients, resources).ca(CertStore(clients, resources).state().root)
    assert f"O={name}" in root.subject  # the stack names the CA
    missing = CliRunner().invoke(main, ["certs", "list", "--stack", "no-such-stack"])
    assert missing.exit_code == 1 and "no-such-stack" in missing.output


class _Raw:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_kw: Any) -> Any:
        yield self._data


# ---- what expires, and what is about to ----------------------------------------------------------------
def test_an_expired_certificate_is_left_out_of_a_rotation_instead_of_stopping_it(aws, resources, store,
                                                                                  tmp_path) -> None:
    """An active certificate past its expiry (nothing writes at expiry) cannot be re-issued with its expiry:
    the rotation re-issues the others and leaves it to be retired with the old intermediate."""
    out = tmp_path / "clients"
    assert certs_cli(aws, resources, "init").exit_code == 0
    Authority(store, clock=lambda: time.time() - 3 * 86_400).issue("old", days=1, out_dir=out)  # expired 2 days ago
    valid = {name: Authority(store).issue(name, out_dir=out) for name in ("a", "b")}
    keys = {name: authority.load_cert(issued.cert_path.read_text()).public_key() for name, issued in valid.items()}
    old = store.claim("old").serial
    listed = certs_cli(aws, resources, "list", "--json")
    assert {c["name"]: c["status"] for c in json.loads(listed.stdout)["certificates"]} == {
        "a": "active", "b": "active", "old": "expired"}
    [row] = [line for line in certs_cli(aws, resources, "list").output.splitlines() if " old " in line]
    assert "expired" in row and "active" not in row

    dry = certs_cli(aws, resources, "rotate-intermediate", "--out-dir", str(out))
    assert dry.exit_code == 0, dry.output
    assert "re-issue 2 active client certificates" in dry.output
    assert "expired, not re-issued" in dry.output and f"old: serial {old[:12]}, expired " in dry.output
    assert "--apply would be refused" not in dry.output

    state = store.state()
    applied = certs_cli(aws, resources, "rotate-intermediate", "--apply", "--out-dir", str(out))
    assert applied.exit_code == 0, applied.output
    rotated = store.state()
    assert rotated.next is None and rotated.retiring == state.current and rotated.current != state.current
    active = {c.name: c for c in store.certs() if c.status is CertStatus.ACTIVE}
    assert {name: c.issuer for name, c in active.items()} == {
        "a": rotated.current, "b": rotated.current, "old": state.current}  # the expired one is not carried over
    for name, issued in valid.items():
        assert active[name].replaces == issued.serial
        chain = authority.load_cert((out / f"{name}.pem").read_text())
        assert authority.info(chain).serial == active[name].serial and chain.public_key() == keys[name]
    assert certs_cli(aws, resources, "issue", "c", "--out-dir", str(out)).exit_code == 0  # nothing half done

    retired = certs_cli(aws, resources, "rotate-intermediate", "--apply", "--force")
    assert retired.exit_code == 0, retired.output
    assert store.cert(old).status is CertStatus.RETIRED and store.claim("old") is None  # retired with its CA
    settled(Authority(store))


def test_a_ca_key_that_does_not_parse_is_a_refusal_not_a_traceback(aws, clients, resources, store,
                                                                   tmp_path) -> None:
    Authority(store).init()
    inter = store.ca(store.state().current)
    clients.ssm.put_parameter(Name=inter.key_parameter, Value="not a key", Type="SecureString", Overwrite=True)
    before = snapshot(store, clients)
    result = certs_cli(aws, resources, "issue", "ci", "--out-dir", str(tmp_path))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"refused: CA {inter.serial[:12]} (key {inter.key_parameter}) cannot be used: " in result.output
    assert snapshot(store, clients) == before and list(tmp_path.iterdir()) == []


def test_an_expired_intermediate_is_a_refusal_that_names_the_rotation(aws, resources, store, tmp_path) -> None:
    Authority(store, clock=lambda: time.time() - 3 * 86_400).init(intermediate_days=1)
    expired = store.state().current
    refused = certs_cli(aws, resources, "issue", "ci", "--out-dir", str(tmp_path))
    assert refused.exit_code == 2 and isinstance(refused.exception, SystemExit), refused.output
    assert f"refused: the intermediate CA {expired[:12]} expired " in refused.output
    assert "`iac-ci certs rotate-intermediate --apply` makes a new one" in refused.output
    assert list(tmp_path.iterdir()) == []
    listed = certs_cli(aws, resources, "list")
    assert f"warning: intermediate CA {expired[:12]} expired " in listed.output
    assert certs_cli(aws, resources, "rotate-intermediate", "--apply").exit_code == 0
    assert certs_cli(aws, resources, "issue", "ci", "--out-dir", str(tmp_path)).exit_code == 0


def test_an_expired_root_is_a_refusal_that_names_init_force(aws, clients, resources, store, tmp_path) -> None:
    Authority(store, clock=lambda: time.time() - 3 * 86_400).init(root_days=1)
    root = store.state().root
    dry = certs_cli(aws, resources, "rotate-intermediate")
    assert dry.exit_code == 0 and f"--apply would be refused: root CA {root[:12]} expired " in dry.output
    before = snapshot(store, clients)
    applied = certs_cli(aws, resources, "rotate-intermediate", "--apply")
    assert applied.exit_code == 2 and isinstance(applied.exception, SystemExit), applied.output
    assert f"refused: root CA {root[:12]} expired " in applied.output
    assert "`iac-ci certs init --force`" in applied.output
    assert snapshot(store, clients) == before
    listed = certs_cli(aws, resources, "list")
    assert f"warning: root CA {root[:12]} expired " in listed.output
    assert certs_cli(aws, resources, "init", "--force").exit_code == 0
    assert certs_cli(aws, resources, "issue", "ci", "--out-dir", str(tmp_path)).exit_code == 0


@pytest.mark.parametrize(("root_days", "intermediate_days", "warned"), [
    (91, 31, []), (89, 31, ["root"]), (91, 29, ["intermediate"])])
def test_list_warns_of_a_ca_about_to_expire_with_the_command_that_fixes_it(
        aws, resources, store, root_days: int, intermediate_days: int, warned: list[str]) -> None:
    Authority(store).init(root_days=root_days, intermediate_days=intermediate_days)
    state = store.state()
    listed = certs_cli(aws, resources, "list")
    assert listed.exit_code == 0, listed.output
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("warning:")]
    expected = {
        "intermediate": (f"warning: intermediate CA {state.current[:12]} expires ", f"(in {intermediate_days} days): "
                         "`iac-ci certs rotate-intermediate --apply` makes a new one"),
        "root": (f"warning: root CA {state.root[:12]} expires ", f"(in {root_days} days), and no intermediate "
                 "outlives it: `iac-ci certs init --force` makes a new root and intermediate"),
    }
    assert len(warnings) == len(warned)
    for line, kind in zip(warnings, warned, strict=True):
        start, middle = expected[kind]
        assert line.startswith(start) and middle in line


def test_the_grace_period_ends_on_time_even_before_the_old_intermediate_is_retired(clients, store,
                                                                                   tmp_path) -> None:
    clock = Clock()
    ca = Authority(store, clock=clock)
    ca.init()
    old = ca.issue("ci", out_dir=tmp_path).cert_path.read_text()
    ca.apply_rotation(ca.plan_rotation(grace_days=7), out_dir=tmp_path / "new")
    new = (tmp_path / "new" / "ci.pem").read_text()
    state = store.state()
    assert store.ca(state.retiring).retire_after == state.retire_after == clock.now + 7 * 86_400
    check = ClientCertCheck(clients.dynamodb, store.resources.table, cache_seconds=0, clock=clock)
    clock.now = state.retire_after - 60
    assert (verdict(check, old), verdict(check, new)) == ("ok", "ok")
    assert ca.checkup() == []
    clock.now = state.retire_after + 1  # nobody ran the second --apply
    assert verdict(check, old) == ("client certificate 'ci' is superseded and the grace period of the intermediate "
                                   "CA that issued it has ended")
    assert verdict(check, new) == "ok"
    assert state.retiring in truststore_certs(store)  # still trusted in the handshake: the table refuses it
    [warning] = ca.checkup()
    assert warning.startswith(f"the grace period of intermediate CA {state.retiring[:12]} ended ")
    assert "`iac-ci certs rotate-intermediate --apply` retires it and removes it from the truststore" in warning
    ca.apply_rotation(ca.plan_rotation())  # not blocked: the grace period is over
    clock.now += 1  # past the lookups cached at the last instant
    assert verdict(check, old) == "client certificate 'ci' is retired"
    assert state.retiring not in truststore_certs(store) and ca.checkup() == []


def test_the_checkup_says_a_grace_period_ended_only_when_the_api_refuses_its_certificates(clients, store,
                                                                                         tmp_path) -> None:
    """An intermediate rotated before its CA record kept ``retire_after``: the API accepts its certificates
    until step 2 retires it, so the checkup does not say that it refuses them."""
    clock = Clock()
    ca = Authority(store, clock=clock)
    ca.init()
    old = ca.issue("ci", out_dir=tmp_path).cert_path.read_text()
    ca.apply_rotation(ca.plan_rotation(grace_days=7), out_dir=tmp_path / "new")
    state = store.state()
    store.transact([store.update(ca_pk(state.retiring), {}, condition="attribute_exists(pk)",
                                 remove=["retire_after"])])
    clock.now = state.retire_after + 1
    check = ClientCertCheck(clients.dynamodb, store.resources.table, cache_seconds=0, clock=clock)
    assert verdict(check, old) == "ok"
    assert ca.checkup() == []


@pytest.mark.parametrize("rotation", ["staged", "completed"])
def test_a_rotation_between_the_read_and_the_commit_of_an_issue_refuses_the_issue(store, tmp_path,
                                                                                  rotation: str) -> None:
    """``issue`` signs with the intermediate it read; a rotation started meanwhile would never re-issue
    that certificate. The commit is conditioned on the CA state it read: refused, and nothing is left."""
    Authority(store).init()

    def rotate_meanwhile(point: str) -> None:
        if point != "issue:files-written":
            return
        rotating = Authority(store, checkpoint=crash_at("rotate:staged") if rotation == "staged" else None)
        with contextlib.suppress(Killed):
            rotating.apply_rotation(rotating.plan_rotation(), out_dir=tmp_path / "rotated")

    with pytest.raises(CertsError) as refused:
        Authority(store, checkpoint=rotate_meanwhile).issue("ci", out_dir=tmp_path / "ci")
    message = str(refused.value)
    assert message.startswith("'ci' was not issued: the certificate authority changed meanwhile")
    assert "nothing was written" in message
    assert ("after `iac-ci certs rotate-intermediate --apply` finishes the rotation" in message) == (
        rotation == "staged")
    assert store.claim("ci") is None and [c for c in store.certs() if c.name == "ci"] == []
    assert list((tmp_path / "ci").iterdir()) == []


def test_api_gateways_truststore_warnings_are_printed(aws, clients, resources, monkeypatch) -> None:
    """API Gateway takes a truststore it cannot fully use (mutual TLS stays on; some clients are refused)
    and says so only in ``truststoreWarnings``; the CLI passes them on."""
    warning = "Certificate 2 of 2 in the truststore is not a valid CA certificate"  # a list of strings: its shape
    domain = ["--domain-name", "ci.example.com"]
    api_gateway = FakeDomain(clients.client("apigateway"), resources.truststore_uri,
                             warnings=(warning,)).everywhere(monkeypatch)
    init = certs_cli(aws, resources, "init", *domain)
    assert init.exit_code == 0, init.output
    assert api_gateway.patches == [[{"op": "replace", "path": "/mutualTlsAuthentication/truststoreVersion",
                                     "value": CertStore(clients, resources).truststore().version}]]
    assert f"warning: API Gateway domain ci.example.com: {warning}" in init.stderr.splitlines()
    listed = certs_cli(aws, resources, "list", *domain)  # GetDomainName: the warnings stand until a new truststore
    assert listed.exit_code == 0 and f"warning: API Gateway domain ci.example.com: {warning}" in listed.stderr


# ---- a crash at each checkpoint, then the run that recovers ----------------------------------------------
def crash_at(point: str, *, nth: int = 1):
    seen = {"n": 0}

    def checkpoint(reached: str) -> None:
        if reached == point:
            seen["n"] += 1
            if seen["n"] == nth:
                raise Killed(point)

    return checkpoint


def accepted_names(check: ClientCertCheck, chains: dict[str, str]) -> set[str]:
    return {name for name, chain in chains.items() if verdict(check, chain) == "ok"}


def settled(ca: Authority) -> None:
    """Nothing pending, the truststore what the table says, one active certificate per claimed name."""
    state = ca.require_state()
    assert ca.pending(state) == [] and state.next is None
    assert ca.store.truststore().text == ca.expected_truststore(state)
    active = [c for c in ca.store.certs() if c.status is CertStatus.ACTIVE]
    assert len({c.name for c in active}) == len(active)
    for cert in active:
        assert ca.store.claim(cert.name).serial == cert.serial


# one point per kind of state a crash can leave: an orphan key (nothing staged), a staged intermediate,
# some certificates re-issued and some not, everything committed (a crash after the truststore's publication
# and before the first re-issue leaves what "staged" leaves plus a truststore that is already right)
ROTATE_POINTS = [("rotate:key-stored", 1), ("rotate:staged", 1), ("rotate:reissued", 1), ("rotate:committed", 1)]


@pytest.mark.faults
@pytest.mark.parametrize(("point", "nth"), ROTATE_POINTS, ids=[f"{p}#{n}" for p, n in ROTATE_POINTS])
def test_a_rotation_killed_midway_keeps_every_client_working_and_the_next_apply_finishes_it(
        clients, store, tmp_path, point: str, nth: int) -> None:
    setup = Authority(store)
    setup.init()
    chains = {name: setup.issue(name, out_dir=tmp_path).cert_path.read_text() for name in ("a", "b")}
    check = ClientCertCheck(clients.dynamodb, store.resources.table, cache_seconds=0)
    dying = Authority(store, checkpoint=crash_at(point, nth=nth))
    with pytest.raises(Killed):
        dying.apply_rotation(dying.plan_rotation(grace_days=1), out_dir=tmp_path / "new")
    assert accepted_names(check, chains) == {"a", "b"}  # nobody is locked out by the crash
    with pytest.raises(CertsError, match="rotation is half done|has an active certificate"):
        setup.issue("a", out_dir=tmp_path / "late")
    recover = Authority(store)
    plan = recover.plan_rotation(grace_days=1)
    if point != "rotate:committed":  # else the rotation was complete: its next step is the retirement
        assert plan.kind == ("resume" if point != "rotate:key-stored" else "rotate")
        recover.apply_rotation(plan, out_dir=tmp_path / "new")
    assert recover.plan_rotation().kind == "retire"
    settled(recover)
    state = recover.require_state()
    assert state.retiring is not None and state.current != state.retiring
    active = {c.name: c for c in store.certs() if c.status is CertStatus.ACTIVE}
    assert sorted(active) == ["a", "b"] and {c.issuer for c in active.values()} == {state.current}
    new = {f"{n}-new": (tmp_path / "new" / f"{n}.pem").read_text() for n in active}  # every one reached a file
    assert {authority.info(authority.load_cert(c)).serial for c in new.values()} == {c.serial for c in active.values()}
    assert accepted_names(check, chains | new) == {"a", "b", *new}


@pytest.mark.faults
@pytest.mark.parametrize("point", ["retire:committed", "converge:truststore-published"])
def test_a_retirement_killed_midway_refuses_the_old_certificates_at_once_and_converges(
        clients, store, tmp_path, point: str) -> None:
    setup = Authority(store)
    setup.init()
    old = {n: setup.issue(n, out_dir=tmp_path).cert_path.read_text() for n in ("a", "b")}
    setup.apply_rotation(setup.plan_rotation(grace_days=0), out_dir=tmp_path / "new")
    new = {f"{n}-new": (tmp_path / "new" / f"{n}.pem").read_text() for n in ("a", "b")}
    check = ClientCertCheck(clients.dynamodb, store.resources.table, cache_seconds=0)
    dying = Authority(store, checkpoint=crash_at(point))
    with pytest.raises(Killed):
        dying.apply_rotation(dying.plan_rotation())
    assert accepted_names(check, old | new) == set(new)  # the commit came first: the old ones are out
    recover = Authority(store)
    plan = recover.plan_rotation()
    assert plan.kind == "converge"
    recover.apply_rotation(plan)
    assert recover.plan_rotation().kind == "rotate"
    settled(recover)
    assert len(truststore_certs(store)) == 2


INIT_POINTS = [("init:keys-stored", "starts over"), ("init:committed", "finishes"),
               ("converge:truststore-published", "was done")]


@pytest.mark.faults
@pytest.mark.parametrize(("point", "then"), INIT_POINTS, ids=[p for p, _ in INIT_POINTS])
def test_an_init_killed_midway_is_finished_by_the_next_init(clients, store, point: str, then: str) -> None:
    with pytest.raises(Killed):
        Authority(store, checkpoint=crash_at(point)).init()
    crashed = store.state()
    recover = Authority(store)
    if then == "was done":
        with pytest.raises(CertsError, match="a certificate authority exists"):
            recover.init()
    else:
        lines = recover.init()
        assert (lines[0] == "finished an earlier command:") == (then == "finishes")
        assert (store.state() == crashed) == (then == "finishes")
    settled(recover)
    with pytest.raises(CertsError, match="a certificate authority exists"):
        recover.init()


@pytest.mark.faults
def test_an_issue_killed_before_its_commit_leaves_files_the_api_refuses(clients, store, tmp_path) -> None:
    Authority(store).init()
    with pytest.raises(Killed):
        Authority(store, checkpoint=crash_at("issue:files-written")).issue("ci", out_dir=tmp_path / "1")
    orphan = (tmp_path / "1" / "ci.pem").read_text()
    check = ClientCertCheck(clients.dynamodb, store.resources.table, cache_seconds=0)
    assert verdict(check, orphan).startswith("unknown client certificate")
    issued = Authority(store).issue("ci", out_dir=tmp_path / "2")  # the name was never taken
    assert verdict(check, issued.cert_path.read_text()) == "ok"


@pytest.mark.faults
def test_a_failed_commit_removes_the_files_it_wrote(clients, store, tmp_path) -> None:
    """A handled failure (the transaction refused by AWS, not a crash) leaves no key file behind."""
    Authority(store).init()

    def refuse(request: Any, **_kw: Any) -> AWSResponse:
        body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
                           "message": "injected (fault test)"}).encode()
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(body))

    event = "before-send.dynamodb.TransactWriteItems"
    clients.dynamodb.meta.events.register(event, refuse)
    try:
        with pytest.raises(Exception, match="injected"):
            Authority(store).issue("ci", out_dir=tmp_path)
    finally:
        clients.dynamodb.meta.events.unregister(event, refuse)
    assert list(tmp_path.iterdir()) == [] and store.claim("ci") is None


@pytest.mark.faults
def test_a_commit_whose_answer_was_lost_is_not_taken_for_a_refusal(clients, store, tmp_path) -> None:
    """The transaction is applied but its answer lost; botocore's retry is refused by the transaction's
    own condition (moto ignores the request token): the issue still succeeds, once."""
    Authority(store).init()
    lost = LostResponses("dynamodb", "TransactWriteItems", lambda body: b"name#ci" in body).install(clients)
    issued = Authority(store).issue("ci", out_dir=tmp_path)
    assert lost.lost == [200]
    assert issued.key_path.exists() and store.claim("ci").serial == issued.serial
    assert [c.serial for c in store.certs()] == [issued.serial]


@pytest.mark.faults
def test_a_revocation_killed_midway_is_finished_by_revoking_again(clients, store, tmp_path) -> None:
    setup = Authority(store)
    setup.init()
    old = setup.issue("ci", out_dir=tmp_path).cert_path.read_text()
    setup.apply_rotation(setup.plan_rotation(), out_dir=tmp_path / "new")  # 7 days of grace: both accepted
    new = (tmp_path / "new" / "ci.pem").read_text()
    check = ClientCertCheck(clients.dynamodb, store.resources.table, cache_seconds=0)
    with pytest.raises(Killed):
        Authority(store, checkpoint=crash_at("revoke:superseded")).revoke("ci")
    assert verdict(check, old) == "client certificate 'ci' is revoked"  # the superseded one goes first
    Authority(store).revoke("ci")
    assert verdict(check, new) == "client certificate 'ci' is revoked" and store.claim("ci") is None
