"""The pure parts of mutual TLS: the certificates ``iac_ci.certs.authority`` makes (checked by an
independent verifier, ``cryptography.x509.verification``, as a TLS server would check them), CSRs,
the records, what the intake reads from a proxy event, and the CLI's option handling."""

from __future__ import annotations

import datetime
import os
import ssl
import stat
import time
from pathlib import Path

import click
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from iac_ci.certs import authority
from iac_ci.certs.lifecycle import CertsError, _write_new, check_name
from iac_ci.certs.store import CertResources, DomainTruststore, StoreError
from iac_ci.cli import tls
from iac_ci.embedded.apigw import client_cert_context, proxy_event
from lambda_runtime.certs.records import CaRecord, CaState, CaStatus, CertRecord, CertStatus, normalize_serial
from lambda_runtime.intake.client_certs import ClientCertSettings, PresentedCert
from lambda_runtime.schema import deployment

NOW = time.time()


@pytest.fixture(scope="module")
def ca() -> dict:
    root_key, inter_key = authority.new_key(), authority.new_key()
    root = authority.root_ca(root_key, organization="acme", now=NOW)
    inter = authority.intermediate_ca(inter_key.public_key(), root=root, root_key=root_key, now=NOW)
    return {"root": root, "root_key": root_key, "inter": inter, "inter_key": inter_key}


def client(ca: dict, name: str = "ci", *, not_before: float = NOW - 60, not_after: float = NOW + 86_400,
           key=None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or authority.new_key()
    cert = authority.client_cert(key.public_key(), name=name, issuer=ca["inter"], issuer_key=ca["inter_key"],
                                 not_before=not_before, not_after=not_after)
    return cert, key


def verify(ca: dict, leaf: x509.Certificate, intermediates: list[x509.Certificate], at: float = NOW) -> None:
    """As a TLS server verifies a client: chain to the root, validity at ``at``, clientAuth usage."""
    verifier = (PolicyBuilder().store(Store([ca["root"]])).time(datetime.datetime.fromtimestamp(at, datetime.UTC))
                .build_client_verifier())
    verifier.verify(leaf, intermediates)


# ---- the certificates ----------------------------------------------------------------------------------------
def test_a_client_certificate_verifies_through_its_intermediate(ca) -> None:
    cert, _ = client(ca)
    verify(ca, cert, [ca["inter"]])
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ci"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "acme"
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == ["urn:iac-ci:client:ci"]


def test_the_ca_certificates_limit_their_paths(ca) -> None:
    root_bc = ca["root"].extensions.get_extension_for_class(x509.BasicConstraints).value
    inter_bc = ca["inter"].extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (root_bc.ca, root_bc.path_length, inter_bc.ca, inter_bc.path_length) == (True, 1, True, 0)
    assert ca["inter"].extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_a_client_cannot_sign_a_certificate_the_chain_accepts(ca) -> None:
    """The attack: a client uses its own key and certificate as a CA for a certificate of another name."""
    holder, holder_key = client(ca, "mallory")
    victim_key = authority.new_key()
    forged = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
              .issuer_name(holder.subject).public_key(victim_key.public_key()).serial_number(7)
              .not_valid_before(datetime.datetime.fromtimestamp(NOW - 60, datetime.UTC))
              .not_valid_after(datetime.datetime.fromtimestamp(NOW + 3600, datetime.UTC))
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
              .sign(holder_key, hashes.SHA256()))
    with pytest.raises(VerificationError):
        verify(ca, forged, [holder, ca["inter"]])


def test_validity_is_the_callers_clock_and_never_outlives_the_issuer(ca) -> None:
    expired, _ = client(ca, not_before=NOW - 3 * 86_400, not_after=NOW - 2 * 86_400)
    with pytest.raises(VerificationError):
        verify(ca, expired, [ca["inter"]])
    assert expired.not_valid_after_utc.timestamp() == int(NOW - 2 * 86_400)  # the given clock, not the real one
    forever, _ = client(ca, not_after=NOW + 100 * 365 * 86_400)
    assert forever.not_valid_after_utc == ca["inter"].not_valid_after_utc


def test_a_reissued_certificate_keeps_the_key_and_expiry_under_the_new_intermediate(ca) -> None:
    old, key = client(ca)
    new_key = authority.new_key()
    new_inter = authority.intermediate_ca(new_key.public_key(), root=ca["root"], root_key=ca["root_key"], now=NOW)
    again = authority.reissue(old, name="ci", issuer=new_inter, issuer_key=new_key, now=NOW)
    assert again.public_key() == key.public_key() and again.not_valid_after_utc == old.not_valid_after_utc
    assert again.serial_number != old.serial_number and again.issuer == new_inter.subject
    verify(ca, again, [new_inter])
    with pytest.raises(VerificationError):
        verify(ca, again, [ca["inter"]])  # the old intermediate did not sign it


def test_keys_and_bundles_round_trip(ca) -> None:
    key = authority.new_key()
    assert authority.load_key(authority.key_pem(key)).private_numbers() == key.private_numbers()
    pem = authority.info(ca["inter"]).pem
    assert authority.bundle([pem.rstrip("\n"), pem]) == pem + pem
    assert authority.fingerprint_of_pem(pem) == ca["inter"].fingerprint(hashes.SHA256()).hex()


def csr_of(key, name: str = "x") -> bytes:
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM)


def test_a_csr_gives_its_public_key_only_if_its_signature_verifies() -> None:
    key = authority.new_key()
    assert authority.public_key_of_csr(csr_of(key)) == key.public_key()
    pem = csr_of(key)
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # a bit of the signature flipped
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(authority.CertificateError, match="signature does not verify"):
        authority.public_key_of_csr(tampered)


@pytest.mark.parametrize(("key", "message"), [
    (rsa.generate_private_key(public_exponent=65537, key_size=1024), "1024 bits is too short"),
    (ec.generate_private_key(ec.SECP256K1()), "curve secp256k1 is not accepted"),
])
def test_weak_or_unusual_keys_are_refused(key, message: str) -> None:
    with pytest.raises(authority.CertificateError, match=message):
        authority.public_key_of_csr(csr_of(key))


def test_what_is_not_a_csr_is_refused() -> None:
    with pytest.raises(authority.CertificateError, match="not a PEM certificate signing request"):
        authority.public_key_of_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")


# ---- records and the proxy event ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "normal"), [
    ("a1:0b:00", "a10b00"), ("00:01", "1"), ("A10B", "a10b"), ("0", "0"), ("zz", None), ("", None), ("1" * 65, None)])
def test_serial_numbers_of_every_writer_are_one_form(text: str, normal: str | None) -> None:
    assert normalize_serial(text) == normal


def test_records_round_trip_through_items() -> None:
    cert = CertRecord(serial="ab", name="ci", subject="CN=ci", fingerprint="ff", cert_pem="pem", issuer="12",
                      not_before=1.0, not_after=2.5, status=CertStatus.SUPERSEDED, issued_at=3.0, replaces="aa")
    assert CertRecord.from_item(cert.to_item()) == cert
    item = cert.to_item()
    assert item["not_after"] == {"N": "2.5"} and item["status"] == {"S": "superseded"} and "replaced_by" not in item
    state = CaState(root="1", current="2", next="3", retiring="4", generation=5)
    assert CaState.from_item(state.to_item()) == state and state.trusted == ("2", "3", "4")
    assert CertRecord.from_item({**cert.to_item(), "later": {"S": "a newer field"}}) == cert


def ca_record(status: CaStatus, retire_after: float | None) -> CaRecord:
    return CaRecord(serial="12", kind="intermediate", subject="CN=i", cert_pem="pem", fingerprint="ff", not_before=0.0,
                    not_after=NOW + 86_400, status=status, key_parameter="/p/intermediate-12", created_at=0.0,
                    issuer="1", retire_after=retire_after)


# retire_after as seconds from NOW: test ids are fixed, so every xdist worker collects the same tests
@pytest.mark.parametrize(("status", "retire_in", "over"), [
    (CaStatus.RETIRING, 0, True), (CaStatus.RETIRING, 1, False),
    (CaStatus.RETIRING, None, False),  # rotated before retire_after was recorded on the CA: until step 2
    (CaStatus.CURRENT, -1, False)])
def test_a_grace_period_is_over_at_its_retire_after(status: CaStatus, retire_in: float | None, over: bool) -> None:
    record = ca_record(status, None if retire_in is None else NOW + retire_in)
    assert record.grace_over(NOW) is over
    assert CaRecord.from_item(record.to_item()) == record


def test_a_certificate_has_expired_from_its_not_after_on() -> None:
    cert = CertRecord(serial="ab", name="ci", subject="CN=ci", fingerprint="ff", cert_pem="pem", issuer="12",
                      not_before=1.0, not_after=NOW, status=CertStatus.ACTIVE, issued_at=1.0)
    assert cert.expired(NOW) and not cert.expired(NOW - 1)


def test_api_gateways_truststore_warnings_are_read_from_its_answer() -> None:
    """The shape of GetDomainName's and UpdateDomainName's answer (``MutualTlsAuthentication``)."""
    answer = {"domainName": "ci.example.com", "mutualTlsAuthentication": {
        "truststoreUri": "s3://b/truststore.pem", "truststoreVersion": "v2",
        "truststoreWarnings": ["certificate 2: not a CA", "certificate 3: expired"]}}
    assert DomainTruststore.from_response(answer) == DomainTruststore(
        "v2", ("certificate 2: not a CA", "certificate 3: expired"))
    assert DomainTruststore.from_response({"domainName": "ci.example.com"}) == DomainTruststore(None, ())


def test_the_proxy_event_carries_the_certificate_as_api_gateway_does(ca) -> None:
    cert, _ = client(ca)
    identity = client_cert_context(cert.public_bytes(serialization.Encoding.DER))
    assert set(identity) == {"clientCertPem", "subjectDN", "issuerDN", "serialNumber", "validity"}
    assert identity["serialNumber"].count(":") >= 1 and identity["subjectDN"] == cert.subject.rfc4514_string()
    when = cert.not_valid_after_utc
    assert identity["validity"]["notAfter"] == f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"
    presented = PresentedCert.from_event(proxy_event("GET", "/locks", client_cert=identity))
    assert presented == PresentedCert(serial=authority.info(cert).serial,
                                      fingerprint=authority.info(cert).fingerprint, subject=identity["subjectDN"])


@pytest.mark.parametrize("identity", [
    None, {}, {"serialNumber": "zz", "clientCertPem": "x"}, {"serialNumber": "01", "clientCertPem": "no pem"},
    {"serialNumber": "01", "clientCertPem": "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"},
])
def test_an_event_without_a_usable_certificate_presents_none(identity) -> None:
    event = proxy_event("GET", "/locks")
    if identity is not None:
        event["requestContext"]["identity"]["clientCert"] = identity
    assert PresentedCert.from_event(event) is None


def test_pythons_ssl_and_api_gateway_write_the_same_serial(ca, tmp_path) -> None:
    cert, _ = client(ca)
    path = tmp_path / "c.pem"
    path.write_text(authority.info(cert).pem)
    decoded = ssl._ssl._test_decode_cert(str(path))  # what SSLSocket.getpeercert() returns
    api_gateway = client_cert_context(cert.public_bytes(serialization.Encoding.DER))["serialNumber"]
    assert normalize_serial(decoded["serialNumber"]) == normalize_serial(api_gateway) == authority.info(cert).serial


def test_the_check_is_on_only_when_the_environment_names_the_table() -> None:
    assert ClientCertSettings.from_env({}).table == ""
    assert ClientCertSettings.from_env({deployment.ENV_CLIENT_CERTS_TABLE: "t"}).table == "t"


# ---- small parts of the lifecycle and the CLI ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "../x", "a/b", "-lead", "x" * 65, "sp ace"])
def test_names_that_cannot_be_a_file_and_a_cn_are_refused(name: str) -> None:
    with pytest.raises(CertsError, match="NAME"):
        check_name(name)


def test_a_key_file_is_private_from_the_start_and_never_overwritten(tmp_path) -> None:
    path = tmp_path / "ci.key"
    _write_new(path, "secret", 0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_text() == "secret"
    with pytest.raises(FileExistsError):
        _write_new(path, "other", 0o600)
    assert path.read_text() == "secret" and [p.name for p in tmp_path.iterdir()] == ["ci.key"]


def test_a_stack_without_mutual_tls_outputs_is_named_as_such() -> None:
    with pytest.raises(StoreError, match="has no output CertificatesTable, TruststoreUri"):
        CertResources.from_outputs("S", {deployment.OUTPUT_CA_PARAMETER_PREFIX: "/p/",
                                         deployment.OUTPUT_CA_KEY_ARN: "k"})
    res = CertResources.from_outputs("S", {
        deployment.OUTPUT_CERTIFICATES_TABLE: "t", deployment.OUTPUT_TRUSTSTORE_URI: "s3://b/dir/ts.pem",
        deployment.OUTPUT_CA_PARAMETER_PREFIX: "/iac-ci-engine/S/ca/", deployment.OUTPUT_CA_KEY_ARN: "arn:k",
        deployment.OUTPUT_API_DOMAIN_NAME: "ci.example.com"})
    assert (res.truststore_bucket, res.truststore_key, res.domain_name) == ("b", "dir/ts.pem", "ci.example.com")
    assert res.key_parameter("root", "ab") == "/iac-ci-engine/S/ca/root-ab"


def _context(**given: Path) -> ssl.SSLContext | None:
    ctx = click.Context(click.Command("x"))
    if given:
        ctx.meta[tls.META_KEY] = given
    return tls.client_context(ctx)


def test_client_tls_options(ca, tmp_path) -> None:
    assert _context() is None  # nothing given: urllib's defaults
    cert, key = client(ca)
    (tmp_path / "ci.pem").write_text(authority.bundle([authority.info(cert).pem, authority.info(ca["inter"]).pem]))
    (tmp_path / "ci.key").write_text(authority.key_pem(key))
    (tmp_path / "ca.pem").write_text(authority.info(ca["root"]).pem)
    context = _context(cert=tmp_path / "ci.pem", key=tmp_path / "ci.key", ca=tmp_path / "ca.pem")
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and len(context.get_ca_certs()) == 1
    with pytest.raises(click.UsageError, match="--key needs --cert"):
        _context(key=tmp_path / "ci.key")
    with pytest.raises(click.BadParameter, match="not a PEM certificate and its private key"):
        _context(cert=tmp_path / "ca.pem", key=tmp_path / "ci.key")  # a certificate of another key
    with pytest.raises(click.BadParameter, match="not a readable PEM file of CA certificates"):
        _context(ca=tmp_path / "missing.pem")
