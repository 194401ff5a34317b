"""The revocation check of mutual TLS: API Gateway's truststore has no revocation list.

API Gateway (a custom domain with mTLS) or ``iac-ci serve --client-ca`` verifies the client
certificate's chain and validity in the TLS handshake, and hands the verified certificate to the
intake function in the proxy event (``requestContext.identity.clientCert``: ``clientCertPem``,
``serialNumber``, ``subjectDN``, ``issuerDN``, ``validity``). The handshake cannot know what
``iac-ci certs revoke`` did, so every request is checked here before any route runs:

- the certificate's serial names a ``cert#`` item of the certificates table, and the SHA-256 of the
  certificate presented is the fingerprint recorded there (a certificate nobody issued through
  ``iac-ci certs`` is unknown, whatever CA signed it);
- its status is ``active`` or ``superseded`` (re-issued under a new intermediate, accepted during
  the rotation's grace period), not ``revoked`` or ``retired``, and it has not expired;
- the intermediate that signed it is still trusted (``ca#<serial>``: not ``retired``), so retiring
  an intermediate refuses its certificates at once, whatever an old truststore still says;
- and, if that intermediate is ``retiring``, its grace period (``retire_after``) has not ended: the
  grace period is a limit, not advice, even when nobody runs ``rotate-intermediate --apply`` on time.

Anything else is a 403 naming the reason, before the route (and so before the HMAC signature is
even looked at). Lookups are cached for ``cache_seconds`` (5 s by default, like ``SecretCache`` for
secrets): a warm function does not read DynamoDB on every request, and a revocation takes effect
within that time. The check is on when the function's environment names the table
(``schema.deployment.ENV_CLIENT_CERTS_TABLE``); ``iac-ci serve --client-ca`` turns it on itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from lambda_runtime.certs.records import CaRecord, CertRecord, ca_pk, cert_pk, normalize_serial
from lambda_runtime.logs import logger
from lambda_runtime.schema import deployment
from lambda_runtime.store.codec import value

CACHE_SECONDS = 5.0
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


class ClientCertSettings(BaseModel):
    """The check's configuration, from the intake function's environment."""

    table: str = Field(default="", max_length=255)
    cache_seconds: float = Field(default=CACHE_SECONDS, ge=0, le=300)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientCertSettings:
        env = os.environ if environ is None else environ
        return cls(table=env.get(deployment.ENV_CLIENT_CERTS_TABLE, ""))


@dataclass(frozen=True)
class PresentedCert:
    """What the proxy event says of the client certificate the handshake verified."""

    serial: str
    fingerprint: str
    subject: str

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> PresentedCert | None:
        context = event.get("requestContext")
        identity = context.get("identity") if isinstance(context, Mapping) else None
        cert = identity.get("clientCert") if isinstance(identity, Mapping) else None
        if not isinstance(cert, Mapping):
            return None
        serial = normalize_serial(str(cert.get("serialNumber") or ""))
        der = _der(str(cert.get("clientCertPem") or ""))
        if serial is None or der is None:
            return None
        return cls(serial=serial, fingerprint=hashlib.sha256(der).hexdigest(), subject=str(cert.get("subjectDN") or ""))


def _der(pem: str) -> bytes | None:
    """The DER bytes of the one certificate of ``pem`` (base64 between the PEM markers)."""
    match = _PEM.search(pem)
    if match is None:
        return None
    try:
        return base64.b64decode("".join(match["body"].split()), validate=True)
    except (binascii.Error, ValueError):
        return None


class ClientCertCheck:
    """``refusal(event)``: None for a certificate the table knows, accepts and whose issuer it still
    trusts; else the 403 proxy response. Thread-safe (``iac-ci serve`` handles requests in threads)."""

    def __init__(self, dynamodb: Any, table: str, *, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.time):
        self._ddb, self._table, self._max_age, self._clock = dynamodb, table, cache_seconds, clock
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, dynamodb: Any, *, environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> ClientCertCheck | None:
        """The check the environment asks for; None when it names no certificates table (no mTLS)."""
        settings = ClientCertSettings.from_env(environ)
        if not settings.table:
            return None
        return cls(dynamodb, settings.table, cache_seconds=settings.cache_seconds, clock=clock)

    def refusal(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        presented = PresentedCert.from_event(event)
        if presented is None:
            return self._refuse("a client certificate is required (mutual TLS)", None)
        reason = self.problem(presented)
        return None if reason is None else self._refuse(reason, presented)

    def problem(self, presented: PresentedCert) -> str | None:
        """Why ``presented`` is refused, or None."""
        item = self._get(cert_pk(presented.serial))
        if item is None:
            return "unknown client certificate: it was not issued by iac-ci certs for this deployment"
        cert = CertRecord.from_item(item)
        if cert.fingerprint != presented.fingerprint:
            return "unknown client certificate: it is not the certificate issued with this serial number"
        if not cert.status.accepted:
            return f"client certificate '{cert.name}' is {cert.status.value}"
        now = self._clock()
        if cert.expired(now):
            return f"client certificate '{cert.name}' has expired"
        item = self._get(ca_pk(cert.issuer))
        issuer = CaRecord.from_item(item) if item is not None else None
        if issuer is None or not issuer.status.trusted:
            return f"client certificate '{cert.name}' was issued by an intermediate CA that is retired"
        if issuer.grace_over(now):
            return (f"client certificate '{cert.name}' is {cert.status.value} and the grace period of the "
                    "intermediate CA that issued it has ended")
        return None

    def _get(self, pk: str) -> dict[str, Any] | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(pk)
        if hit is not None and now - hit[0] <= self._max_age:
            return hit[1]
        item = self._ddb.get_item(TableName=self._table, Key={"pk": value(pk)}, ConsistentRead=True).get("Item")
        with self._lock:
            self._cache[pk] = (now, item)
        return item

    @staticmethod
    def _refuse(reason: str, presented: PresentedCert | None) -> dict[str, Any]:
        logger.info("client certificate refused", extra={
            "reason": reason, "serial": presented.serial if presented else None})
        return {"statusCode": 403, "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"error": reason}), "isBase64Encoded": False}
