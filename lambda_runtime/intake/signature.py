"""HMAC-SHA256 request signatures (GitHub's scheme, with our header name)."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-IacCi-Signature-256"
TIMESTAMP_HEADER = "X-IacCi-Timestamp"
MAX_SKEW_SECONDS = 300


def sign(secret: str, data: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(secret: str, data: bytes, signature: str | None) -> bool:
    """Constant-time comparison; a missing or malformed header is simply a mismatch."""
    if not signature or not signature.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, data).encode(), signature.strip().encode())


def read_request_bytes(method: str, path: str, timestamp: str) -> bytes:
    """What a body-less request (status) signs: method, path and a fresh timestamp (no replays)."""
    return f"{method.upper()} {path} {timestamp}".encode()
