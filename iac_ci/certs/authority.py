"""The certificates of mutual TLS, made with ``cryptography`` (no hand-written ASN.1, no I/O).

A root CA signs intermediates; the current intermediate signs client certificates. Every key is
ECDSA P-256 (what API Gateway's truststore and Python's ``ssl`` both take; generating one takes
microseconds, an RSA key a noticeable fraction of a second). Times come from the caller (``now``,
epoch seconds), so tests issue certificates that expired yesterday instead of waiting for one to.

Client certificates carry ``extendedKeyUsage = clientAuth`` (OpenSSL refuses a client certificate
whose EKU lacks it), a ``CN`` of the client's name and the same name as a URI subjectAltName
(``urn:iac-ci:client:<name>``, which RFC 5280 verifiers require); CA certificates are path-length limited
(the root to one intermediate level, intermediates to none), so a client certificate can never
sign another certificate that the truststore would accept.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lambda_runtime.certs.records import serial_hex

DAY = 86_400
ROOT_DAYS = 3650
INTERMEDIATE_DAYS = 730
CLIENT_DAYS = 365
BACKDATE_SECONDS = 300  # a client whose clock runs a little behind still accepts a fresh certificate
MIN_RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class CertificateError(ValueError):
    """A CSR or certificate that cannot be used; the message says why."""


@dataclass(frozen=True)
class CertInfo:
    """What the certificates table records of a certificate."""

    serial: str
    fingerprint: str  # SHA-256 of the DER, lowercase hex
    subject: str  # RFC 4514
    not_before: float
    not_after: float
    pem: str


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> str:
    """Unencrypted PKCS#8: the key is protected where it is kept (SSM SecureString, a 0600 file)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_key(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError("a CA key must be an EC or RSA key")
    return key


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def info(cert: x509.Certificate) -> CertInfo:
    return CertInfo(
        serial=serial_hex(cert.serial_number),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def fingerprint_of_pem(pem: str) -> str:
    return hashlib.sha256(load_cert(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def _time(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: PublicKey, serial: int, not_before: float,
             not_after: float) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(serial).not_valid_before(_time(not_before)).not_valid_after(_time(not_after))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


def root_ca(key: PrivateKey, *, organization: str, now: float, days: int = ROOT_DAYS) -> x509.Certificate:
    """A self-signed root that may sign one level of intermediates."""
    serial = x509.random_serial_number()
    name = _name(f"iac-ci root CA {serial_hex(serial)[:8]}", organization)
    builder = (_builder(name, name, key.public_key(), serial, now - BACKDATE_SECONDS, now + days * DAY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
               .add_extension(_ca_usage(), critical=True))
    return builder.sign(key, hashes.SHA256())


def intermediate_ca(public_key: PublicKey, *, root: x509.Certificate, root_key: PrivateKey, now: float,
                    days: int = INTERMEDIATE_DAYS) -> x509.Certificate:
    """An intermediate signed by ``root``, valid at most as long as the root; it signs no CA."""
    serial = x509.random_serial_number()
    organization = _organization(root)
    not_after = min(now + days * DAY, root.not_valid_after_utc.timestamp())
    name = _name(f"iac-ci intermediate CA {serial_hex(serial)[:8]}", organization)
    builder = (_builder(name, root.subject, public_key, serial, now - BACKDATE_SECONDS, not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_ca_usage(), critical=True)
               .add_extension(_authority_key_id(root), critical=False))
    return builder.sign(root_key, hashes.SHA256())


def client_cert(public_key: PublicKey, *, name: str, issuer: x509.Certificate, issuer_key: PrivateKey,
                not_before: float, not_after: float) -> x509.Certificate:
    """A client certificate for ``name`` (its CN), signed by ``issuer``; never valid past the issuer."""
    check_public_key(public_key)
    serial = x509.random_serial_number()
    not_after = min(not_after, issuer.not_valid_after_utc.timestamp())
    builder = (_builder(_name(name, _organization(issuer)), issuer.subject, public_key, serial, not_before,
                        not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(client_uri(name))]),
                              critical=False)
               .add_extension(_authority_key_id(issuer), critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


def client_uri(name: str) -> str:
    """The client's identity as a subjectAltName, for verifiers that (rightly) look there, not at the CN."""
    return f"urn:iac-ci:client:{name}"


def reissue(old: x509.Certificate, *, name: str, issuer: x509.Certificate, issuer_key: PrivateKey,
            now: float) -> x509.Certificate:
    """``old``'s public key and expiry under a new issuer: its holder swaps the certificate only."""
    not_after = old.not_valid_after_utc.timestamp()
    return client_cert(old.public_key(), name=name, issuer=issuer, issuer_key=issuer_key,  # type: ignore[arg-type]
                       not_before=now - BACKDATE_SECONDS, not_after=not_after)


def public_key_of_csr(pem: bytes) -> PublicKey:
    """The public key of a PEM CSR whose signature proves its holder has the private key. The subject
    it asks for is ignored: the certificate's name is the one ``iac-ci certs issue`` is given."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate signing request ({exc})") from None
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError, TypeError):
        valid = False
    if not valid:
        raise CertificateError("the request's signature does not verify: it was not signed with its own key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertificateError("the request's key must be EC (P-256, P-384) or RSA (2048 bits or more)")
    check_public_key(key)
    return key


def check_public_key(key: object) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise CertificateError(f"EC curve {key.curve.name} is not accepted (P-256 or P-384)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(f"an RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})")
    else:
        raise CertificateError("the key must be EC (P-256, P-384) or RSA (2048 bits or more)")


def bundle(pems: list[str]) -> str:
    """PEM certificates one after the other, each ending with a newline (a truststore, a chain)."""
    return "".join(p if p.endswith("\n") else p + "\n" for p in pems)


def _organization(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else "iac-ci"


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
