"""Request signatures: HMAC-SHA256 over one canonical string, so a signature is good for one
request (method, path, body) at one moment (a timestamp), never for another or for later.

The signed string of every signed route of our API (``canonical``)::

    "<timestamp>\\n<METHOD>\\n<path>\\n" + body

``timestamp`` is the ``X-IacCi-Timestamp`` header exactly as sent (Unix seconds, integer or
decimal); ``path`` is the route path below the API's base URL (``/jobs``, ``/runs/<id>``,
``/runs/<id>/cancel``), so a deployed stage prefix is not part of it; ``body`` is the raw bytes
(empty for GET). The signature goes in ``X-IacCi-Signature-256`` as ``sha256=<hex>``. A request
whose timestamp is more than ``MAX_SKEW_SECONDS`` from the server's clock is refused, and the
state-changing routes remember each signature for that window (``store.replays``): that is what
stops a captured request from being sent again. A body-only signature (the scheme before this
one) matches nothing here.

``sign`` and ``verify`` are the bare HMAC primitives; GitHub's webhook scheme (``X-Hub-Signature-256``
over the body, deduplicated by ``X-GitHub-Delivery``) uses them directly.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re

HEADER = "X-IacCi-Signature-256"
TIMESTAMP_HEADER = "X-IacCi-Timestamp"
MAX_SKEW_SECONDS = 300

# Unix seconds, optionally with a fraction: no sign, exponent, "nan", "inf" or digit separators,
# all of which float() would take. Eleven digits reach the year 5138.
_TIMESTAMP = re.compile(r"[0-9]{1,11}(?:\.[0-9]{1,9})?")


class Verdict(enum.Enum):
    """Why a signed request was accepted or refused; the 401 answers with ``message``."""

    OK = "ok"
    BAD_SIGNATURE = "bad or missing signature"
    BAD_TIMESTAMP = f"missing or malformed {TIMESTAMP_HEADER} (Unix seconds)"
    STALE_TIMESTAMP = f"{TIMESTAMP_HEADER} is more than {MAX_SKEW_SECONDS} s away from the server's clock"

    @property
    def ok(self) -> bool:
        return self is Verdict.OK

    @property
    def message(self) -> str:
        return self.value


def sign(secret: str, data: bytes) -> str:
    """``sha256=<hex>`` of ``data``: the bare HMAC (GitHub's header format)."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(secret: str, data: bytes, signature: str | None) -> bool:
    """Constant-time comparison; a missing or malformed header is simply a mismatch."""
    if not signature or not signature.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, data).encode(), signature.strip().encode())


def canonical(timestamp: str, method: str, path: str, body: bytes) -> bytes:
    """The one string every signed route signs: the timestamp, method and path bind the body to
    one request at one moment (newlines cannot occur in a valid timestamp, method or path)."""
    return f"{timestamp}\n{method.upper()}\n{path}\n".encode() + body


def format_timestamp(now: float) -> str:
    """Microseconds, so two submissions of the same body a moment apart are two signatures."""
    return f"{now:.6f}"


def parse_timestamp(text: str | None) -> float | None:
    """Seconds from the header, or None when missing or not plain decimal Unix seconds."""
    if text is None or not _TIMESTAMP.fullmatch(text):
        return None
    return float(text)


def signed_headers(secret: str, method: str, path: str, body: bytes | None, now: float) -> dict[str, str]:
    """The two headers that authenticate one request; call it per attempt, as a retry with the
    same headers is a replay."""
    timestamp = format_timestamp(now)
    return {TIMESTAMP_HEADER: timestamp, HEADER: sign(secret, canonical(timestamp, method, path, body or b""))}


def verify_request(secret: str, *, method: str, path: str, body: bytes, timestamp: str | None,
                   signature: str | None, now: float) -> Verdict:
    """The timestamp's form first (so a client on an old scheme is told what is missing), then the
    signature over it, then its age: "stale" is only ever said of a genuinely signed request."""
    seconds = parse_timestamp(timestamp)
    if seconds is None or timestamp is None:
        return Verdict.BAD_TIMESTAMP
    if not verify(secret, canonical(timestamp, method, path, body), signature):
        return Verdict.BAD_SIGNATURE
    if abs(now - seconds) > MAX_SKEW_SECONDS:
        return Verdict.STALE_TIMESTAMP
    return Verdict.OK
