"""HTTP through presigned URLs: the worker's only way to read and write the order's objects.

The URLs are capabilities, so no error text produced here ever includes one.
"""

from __future__ import annotations

import http.client
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO

from lambda_runtime.worker.errors import TransferError

HTTP_TIMEOUT_SECONDS = 60
HTTP_RETRY_DELAYS = (0.5, 1.0, 2.0)  # three retries after the first attempt
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})


def http_get(url: str, dest: Path) -> None:
    def attempt() -> None:
        with (
            urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=HTTP_TIMEOUT_SECONDS) as resp,
            open(dest, "wb") as out,
        ):
            shutil.copyfileobj(resp, out)

    with_retries(attempt)


def http_put(url: str, body: bytes | Path, content_type: str, headers: Mapping[str, str] | None = None, *,
             retry_delays: tuple[float, ...] = HTTP_RETRY_DELAYS, timeout: float = HTTP_TIMEOUT_SECONDS) -> None:
    """PUT bytes or a file (streamed with an explicit length, so big logs never sit in memory).

    The content type is always explicit: urllib would otherwise label the body as a form and
    some servers would consume it as one. ``retry_delays`` ``()``: one attempt (the live log,
    whose next upload is the retry).
    """

    def attempt() -> None:
        length = len(body) if isinstance(body, bytes) else body.stat().st_size
        all_headers = {"Content-Type": content_type, "Content-Length": str(length), **(headers or {})}
        with _open_body(body) as data:
            req = urllib.request.Request(url, data=data, method="PUT", headers=all_headers)
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()

    with_retries(attempt, retry_delays)


def _open_body(body: bytes | Path) -> AbstractContextManager[bytes | BinaryIO]:
    """A file is reopened on every attempt, so a retry sends it from the start."""
    return open(body, "rb") if isinstance(body, Path) else nullcontext(body)


def with_retries(attempt: Callable[[], None], delays: tuple[float, ...] = HTTP_RETRY_DELAYS) -> None:
    """Retry what a retry can fix (network, throttling, 5xx); error text never includes the URL."""
    for delay in (*delays, None):
        try:
            attempt()
            return
        except urllib.error.HTTPError as exc:
            error = TransferError(f"HTTP {exc.code} {exc.reason}", status=exc.code)
            exc.close()
            if exc.code not in TRANSIENT_HTTP:
                raise error from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            error = TransferError(f"network error: {reason}")
        if delay is None:
            raise error from None
        time.sleep(delay)
