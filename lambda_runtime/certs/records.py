"""What the certificates table holds (``schema.tables.CERTIFICATES``), as typed records.

``iac-ci certs`` writes these items and the intake function reads them at request time
(``intake.client_certs``): one module says what both mean, so a status the CLI writes is a status
the API understands. Items are keyed by ``pk``:

``ca#state``        which root signs intermediates, which intermediate signs client certificates
                    (``current``), and the ones still trusted beside it: ``next`` (staged by an
                    interrupted rotation) and ``retiring`` (the previous one, until its grace ends).
``ca#<serial>``     one CA certificate: its PEM, validity, status and the SSM name of its key.
``cert#<serial>``   one client certificate: name, SHA-256 fingerprint, validity, status, issuer.
``name#<name>``     the serial of the name's active certificate: the one item that makes a name
                    unique (written in the same transaction as the certificate).

Serial numbers are lowercase hex without leading zeros (``serial_hex``); API Gateway writes them
as colon-separated bytes (``a1:b2:...``), which ``normalize_serial`` maps to the same form.
Times are epoch seconds, stored as numbers.
"""

from __future__ import annotations

import enum
import string
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Self

from lambda_runtime.store.codec import from_item, to_item

STATE_PK = "ca#state"
CA_PREFIX = "ca#"
CERT_PREFIX = "cert#"
NAME_PREFIX = "name#"


class CertStatus(enum.StrEnum):
    """A client certificate's life: ``active`` (the name's certificate), ``superseded`` (re-issued under
    a new intermediate; still accepted until its own intermediate's ``retire_after``), ``revoked`` (by
    ``iac-ci certs revoke``), ``retired`` (its intermediate was retired)."""

    ACTIVE = "active"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"
    RETIRED = "retired"

    @property
    def accepted(self) -> bool:
        return self in (CertStatus.ACTIVE, CertStatus.SUPERSEDED)


class CaStatus(enum.StrEnum):
    """A CA certificate's place: ``next`` (a rotation staged it: trusted, not yet signing), ``current``
    (signs), ``retiring`` (replaced, trusted until ``retire_after``), ``retired`` (trusted no more)."""

    NEXT = "next"
    CURRENT = "current"
    RETIRING = "retiring"
    RETIRED = "retired"

    @property
    def trusted(self) -> bool:
        return self is not CaStatus.RETIRED


CaKind = Literal["root", "intermediate"]


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalize_serial(text: str) -> str | None:
    """``a1:0B:...`` (API Gateway), ``A10B...`` (Python's ``ssl``) or ``a10b...`` -> ``a10b...``;
    None for anything that is not a hexadecimal serial."""
    digits = text.replace(":", "").strip().lower()
    if not digits or len(digits) > 64 or any(c not in string.hexdigits for c in digits):
        return None
    return digits.lstrip("0") or "0"


def ca_pk(serial: str) -> str:
    return CA_PREFIX + serial


def cert_pk(serial: str) -> str:
    return CERT_PREFIX + serial


def name_pk(name: str) -> str:
    return NAME_PREFIX + name


class _Record:
    """``to_item``/``from_item`` for the dataclasses below; unknown attributes are ignored on read."""

    @property
    def pk(self) -> str:
        raise NotImplementedError

    def to_item(self) -> dict[str, Any]:
        data = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}  # type: ignore[call-overload]
        return to_item({"pk": self.pk, **data})

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Self:
        data = from_item(item)
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class CaState(_Record):
    """Which CA certificates sign and which are trusted; ``generation`` counts changes, and every
    change is conditioned on the generation it read (two operators cannot interleave)."""

    root: str
    current: str
    retiring: str | None = None
    next: str | None = None
    retire_after: float | None = None
    generation: int = 0
    updated_at: float = 0.0

    @property
    def pk(self) -> str:
        return STATE_PK

    @property
    def trusted(self) -> tuple[str, ...]:
        """The intermediates whose certificates the API accepts, signing one first."""
        return tuple(s for s in (self.current, self.next, self.retiring) if s)


@dataclass(frozen=True, slots=True)
class CaRecord(_Record):
    serial: str
    kind: CaKind
    subject: str
    cert_pem: str
    fingerprint: str
    not_before: float
    not_after: float
    status: CaStatus
    key_parameter: str  # SSM SecureString holding its private key (PKCS#8 PEM)
    created_at: float
    issuer: str | None = None  # an intermediate's root
    retire_after: float | None = None  # a retiring intermediate: when its grace period ends

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", CaStatus(self.status))

    def grace_over(self, now: float) -> bool:
        """A retiring intermediate past ``retire_after``: the API refuses its certificates from then on,
        whether or not ``rotate-intermediate --apply`` has retired it yet (nothing runs that on time)."""
        return self.status is CaStatus.RETIRING and self.retire_after is not None and self.retire_after <= now

    @property
    def pk(self) -> str:
        return ca_pk(self.serial)


@dataclass(frozen=True, slots=True)
class CertRecord(_Record):
    serial: str
    name: str
    subject: str
    fingerprint: str  # SHA-256 of the DER certificate, lowercase hex
    cert_pem: str
    issuer: str  # serial of the intermediate that signed it
    not_before: float
    not_after: float
    status: CertStatus
    issued_at: float
    key_source: Literal["generated", "csr", "reissued"] = "generated"
    replaces: str | None = None  # the certificate it was re-issued from (same public key)
    replaced_by: str | None = None
    status_changed_at: float | None = None
    writer: str | None = None  # a nonce: tells our own applied-but-unanswered write from another's

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", CertStatus(self.status))

    @property
    def pk(self) -> str:
        return cert_pk(self.serial)

    def expired(self, now: float) -> bool:
        """Past ``not_after``: refused in the handshake whatever ``status`` says (no write follows expiry)."""
        return self.not_after <= now


@dataclass(frozen=True, slots=True)
class NameClaim(_Record):
    name: str
    serial: str

    @property
    def pk(self) -> str:
        return name_pk(self.name)
