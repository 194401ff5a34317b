"""The live log: the order's log so far, re-uploaded while its commands run, so it can be followed.

The orchestrator gives the worker one more presigned PUT URL with the others (``live_log_url``: a
presigned PUT may be used any number of times until it expires). The worker keeps it as it keeps
the result URL, in its own memory only (``worker.hardening``): no command can find it or write
through it. The upload reads the worker's own ``OrderLog``, the masked and redacted lines only, so the
live log holds exactly what the final log will hold, up to where it was taken.

What it costs is bounded (``LivePolicy``): an upload happens only when the log changed, at most
every ``min_interval_seconds``, and less often as it grows (after an upload of N bytes the next
waits N / ``bytes_per_second``, so the uploads average at most that rate). The live
log shows at most ``cap_bytes`` of the log, and the uploads of one order stop after about
``budget_bytes`` in all; either way a note in the log says where the live log stops, and the
whole log still arrives when the order ends.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lambda_runtime.worker.errors import TransferError
from lambda_runtime.worker.log import MIB, OrderLog, size_text
from lambda_runtime.worker.transfer import http_put

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; charset=utf-8"
UPLOAD_TIMEOUT_SECONDS = 5  # one attempt (the next upload is the retry), short: the report waits for it
STOP_JOIN_SECONDS = UPLOAD_TIMEOUT_SECONDS + 2


@dataclass(frozen=True)
class LivePolicy:
    """When the live log is uploaded, and how much it may cost."""

    min_interval_seconds: float = 2.0
    bytes_per_second: int = 128 * 1024
    cap_bytes: int = 4 * MIB
    budget_bytes: int = 64 * MIB
    poll_seconds: float = 0.25  # how often the publisher looks whether the log changed
    # none before this: an order done within it never pays for a live copy (its final log comes at
    # once), and most no-op and short orders are (one S3 PUT per order saved)
    first_after_seconds: float = 0.5

    def interval(self, uploaded: int) -> float:
        """The least time after an upload of ``uploaded`` bytes before the next: each upload is paid for
        by the wait after it, so the uploads average at most ``bytes_per_second`` whatever the log
        does (a wait sized by the growing log instead would chase a fast one and never come)."""
        return max(self.min_interval_seconds, uploaded / self.bytes_per_second)

    def due(self, *, now: float, size: int, last_size: int, last_at: float) -> bool:
        """Whether a log of ``size`` bytes is to be uploaded at ``now``, the last upload (of
        ``last_size`` bytes) having been at ``last_at``."""
        return size != last_size and now - last_at >= self.interval(last_size)


class LivePublisher:
    """Publishes ``log`` through ``put`` (the bytes of the live log) on a thread of its own, from
    ``start`` until ``stop``; ``step`` is one look at the log (what the thread does each poll)."""

    def __init__(self, log: OrderLog, put: Callable[[bytes], None], *, policy: LivePolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._put = put
        self.policy = policy or LivePolicy()
        self._clock = clock
        self._last_size = 0
        self._last_at = -math.inf
        self._started = clock()
        self._finished = False  # the live log reached its cap or budget: nothing more to upload
        self.uploads = 0
        self.uploaded_bytes = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iac-ci-live-log", daemon=True)

    @classmethod
    def to_url(cls, log: OrderLog, url: str, *, policy: LivePolicy | None = None) -> LivePublisher:
        """A publisher PUTting to a presigned URL (one attempt per upload, a short timeout)."""

        def put(data: bytes) -> None:
            http_put(url, data, CONTENT_TYPE, retry_delays=(), timeout=UPLOAD_TIMEOUT_SECONDS)

        return cls(log, put, policy=policy)

    def start(self) -> LivePublisher:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """No upload after this returns (an upload in flight is waited for): the final log follows."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(STOP_JOIN_SECONDS)

    def _run(self) -> None:
        while not self._stopped.wait(self.policy.poll_seconds):
            self.step()

    def step(self) -> bool:
        """Upload the log if it changed and an upload is due; True if one was made."""
        if self._finished:
            return False
        now = self._clock()
        if now - self._started < self.policy.first_after_seconds:
            return False
        size = self._log.size
        if not self.policy.due(now=now, size=size, last_size=self._last_size, last_at=self._last_at):
            return False
        if self.uploaded_bytes + size > self.policy.budget_bytes:
            self._log.stop_live(f"the live log stops here, having uploaded {size_text(self.policy.budget_bytes)}; "
                                "the whole log is uploaded when the order ends")
        snapshot = self._log.live_snapshot()
        if snapshot is None:  # the log is closed: the order is over
            self._finished = True
            return False
        data, stopped = snapshot
        self._last_at = now
        try:
            self._put(data)
        except TransferError as exc:  # the next due upload tries again; the order goes on regardless
            logger.warning("could not publish the live log: %s", exc)
            return False
        self.uploads += 1
        self.uploaded_bytes += len(data)
        self._last_size = len(data)
        self._finished = stopped
        return True
