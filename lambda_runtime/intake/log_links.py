"""Signed links to a run's logs: a reviewer clicks one in a PR comment and reads the masked logs in
a browser, with no API key and no AWS credentials.

A browser sends no signature headers, so the link carries its own authorization: an expiry and an
HMAC-SHA256 over one canonical string (``canonical``)::

    "iac-ci-logs-v1\\n<run_id>\\n<order or empty>\\n<expires_at>"

under a secret of its own (``Settings.log_link_secret_id``), never the API signing key: a link is
good for reading one run's logs (or one order's, when it names the order) until it expires, and
for nothing else. The purpose tag keeps a signature over the same fields from meaning anything to
another scheme that might share the secret later; newlines cannot occur in a valid run id, order
name or expiry, so no two field tuples share a canonical string.

Expiries are rounded up to the next hour (``expiry``): the orchestrator re-renders a run's PR
comment on every update, and a comment edited in place must not change its links each time.

Everything here is pure except ``LogLinks``, which the VCS provider uses to put links into its
comments (a secret reader and a clock injected, so it is testable without AWS or waiting).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

from lambda_runtime.logs import logger
from lambda_runtime.settings import Settings

PURPOSE = "iac-ci-logs-v1"
ROUND_SECONDS = 3600

# a run id as ``store.acceptance.new_ids`` makes it (8 random bytes, hex); checked before any read
RUN_ID_RE = re.compile(r"[0-9a-f]{16}")
# an order name as the job model allows it (``job.model.ORDER_NAME_RE``, at most 64 characters)
ORDER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_EXPIRES_RE = re.compile(r"[0-9]{1,11}")  # Unix seconds; eleven digits reach the year 5138
_SIG_RE = re.compile(r"[0-9a-f]{64}")

# what ``verify`` answers for a refused link (the 403 says it, and nothing else)
MALFORMED = "malformed link"
BAD_SIGNATURE = "bad signature"
EXPIRED = "link expired"


def canonical(run_id: str, expires_at: int, order: str | None = None) -> bytes:
    """The one string a log link signs (see the module docstring)."""
    return f"{PURPOSE}\n{run_id}\n{order or ''}\n{int(expires_at)}".encode()


def sign(secret: str, run_id: str, expires_at: int, order: str | None = None) -> str:
    """HMAC-SHA256 (hex) of ``canonical``: binds the run, the order (or the whole run) and the expiry."""
    return hmac.new(secret.encode(), canonical(run_id, expires_at, order), hashlib.sha256).hexdigest()


def expiry(now: float, ttl_seconds: int) -> int:
    """``now + ttl_seconds`` rounded up to the next full hour, so every render of a comment within
    that hour produces the same links (a link then lives between ``ttl`` and ``ttl`` + 1 h)."""
    return -(-int(now + ttl_seconds) // ROUND_SECONDS) * ROUND_SECONDS


def query(secret: str, run_id: str, *, expires_at: int, order: str | None = None) -> str:
    """The link's query string (without ``?``): ``expires``, ``sig`` and, for one order, ``order``."""
    params = [("expires", str(int(expires_at))), ("sig", sign(secret, run_id, expires_at, order))]
    if order is not None:
        params.append(("order", order))
    return urlencode(params)


def link(base_url: str, secret: str, run_id: str, *, expires_at: int, order: str | None = None) -> str:
    """``{base_url}/runs/{run_id}/logs?expires=...&sig=...[&order=...]``; ``base_url`` is the API's
    public URL, stage included (a trailing slash is dropped)."""
    path = f"/runs/{quote(run_id, safe='')}/logs"
    return f"{base_url.rstrip('/')}{path}?{query(secret, run_id, expires_at=expires_at, order=order)}"


def check_format(run_id: str, order: str | None, expires: str | None, sig: str | None) -> str | None:
    """``MALFORMED`` unless every part has its exact form; None when they do. Needs no secret, so the
    route refuses a malformed link before it reads anything."""
    if not RUN_ID_RE.fullmatch(run_id or ""):
        return MALFORMED
    if order is not None and not ORDER_RE.fullmatch(order):
        return MALFORMED
    if expires is None or not _EXPIRES_RE.fullmatch(expires) or sig is None or not _SIG_RE.fullmatch(sig):
        return MALFORMED
    return None


def verify(secret: str, run_id: str, order: str | None, expires: str | None, sig: str | None,
           now: float) -> str | None:
    """None when the link is valid at ``now``; else why not (``MALFORMED``, ``BAD_SIGNATURE``,
    ``EXPIRED``). The form first, then the signature (constant-time), then the expiry: "expired" is
    only ever said of a link we really signed, so a forger learns nothing about the clock."""
    problem = check_format(run_id, order, expires, sig)
    if problem is not None or expires is None or sig is None:
        return problem or MALFORMED
    if not hmac.compare_digest(sign(secret, run_id, int(expires), order).encode(), sig.encode()):
        return BAD_SIGNATURE
    if now >= int(expires):
        return EXPIRED
    return None


class LogLinks:
    """Links for PR comments: ``for_run(run_id)`` for the whole run, ``for_run(run_id, order)`` for
    one order. ``secret`` reads a secret's value by id (a cached Secrets Manager read); it is called
    per link, so the cache decides how often Secrets Manager is asked."""

    def __init__(self, settings: Settings, secret: Callable[[str], str], clock: Callable[[], float] = time.time):
        self._settings = settings
        self._secret = secret
        self._clock = clock

    @property
    def enabled(self) -> bool:
        """Whether the deployment has both a public API URL and a log-link secret."""
        return bool(self._settings.api_url and self._settings.log_link_secret_id)

    def for_run(self, run_id: str, order: str | None = None) -> str | None:
        """The link, or None when links are not configured, or when the secret cannot be read: a
        comment without a link is better than no comment (the failure is logged)."""
        if not self.enabled:
            return None
        try:
            key = self._secret(self._settings.log_link_secret_id)
        except Exception as exc:
            logger.warning("log links disabled: cannot read the log-link secret",
                           extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return None
        expires_at = expiry(self._clock(), self._settings.log_link_ttl_seconds)
        return link(self._settings.api_url, key, run_id, expires_at=expires_at, order=order)
