"""API Gateway REST proxy events, built the way API Gateway builds them, for local callers."""

from __future__ import annotations

import base64
import datetime
import uuid
from typing import Any


def proxy_event(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    *,
    multi_query: dict[str, list[str]] | None = None,
    client_cert: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``query`` holds one value per parameter (the last, as API Gateway's ``queryStringParameters``);
    ``multi_query``, when given, every value (``multiValueQueryStringParameters``); ``client_cert``
    the verified client certificate of a mutual TLS connection (``client_cert_context``)."""
    text: str | None = None
    is_b64 = False
    if body is not None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
    hdrs = dict(headers or {})
    return {
        "resource": path,
        "path": path,
        "httpMethod": method.upper(),
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or ({k: [v] for k, v in query.items()} if query else None),
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "embedded",
            "stage": "prod",
            "httpMethod": method.upper(),
            "path": f"/prod{path}",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "resourcePath": path,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": hdrs.get("User-Agent", ""),
                         **({"clientCert": client_cert} if client_cert is not None else {})},
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


def client_cert_context(der: bytes) -> dict[str, Any]:
    """``requestContext.identity.clientCert`` of a REST API with mutual TLS, from the DER certificate
    the handshake verified: the PEM, RFC 4514 subject and issuer, the serial as colon-separated hex
    bytes and the validity as OpenSSL prints it (``May 28 12:30:02 2019 GMT``), as API Gateway sends
    them."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_der_x509_certificate(der)
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    return {
        "clientCertPem": cert.public_bytes(Encoding.PEM).decode(),
        "subjectDN": cert.subject.rfc4514_string(),
        "issuerDN": cert.issuer.rfc4514_string(),
        "serialNumber": ":".join(f"{b:02x}" for b in serial),
        "validity": {"notBefore": _openssl_time(cert.not_valid_before_utc),
                     "notAfter": _openssl_time(cert.not_valid_after_utc)},
    }


def _openssl_time(when: datetime.datetime) -> str:
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"
