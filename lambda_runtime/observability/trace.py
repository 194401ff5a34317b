"""Leg traces, ``<run id>:<epoch>``: one per leg of a run, and the X-Ray ids derived from them.

A run happens in legs, each one process doing one piece of it: intake (accepting it), packaging,
each wake-up of the orchestrator, each order. Every leg has a trace of its own: the run id, a
colon, and the epoch the leg began, in seconds to the microsecond, so two legs in one second
differ (and, in one process, epochs only ever grow). The run's trace id (``RunRecord.trace_id``,
the ``trace_id`` a client is answered) is its intake leg's, to the second, as it always was.

X-Ray: S3 event notifications carry no trace header, so every leg's Lambda invocation starts an
X-Ray trace of its own. The run's X-Ray trace id is *derived* from the run's trace instead:
``1-<accept epoch, 8 hex>-<first 24 hex of sha256(run id)>``. Every leg computes the same id from
the run item, with nothing handed along; segment ids are derived from leg traces the same way,
so a leg can name its parent (the intake leg's segment) without having seen it.

Pure functions only: no clock is read here except through ``LegClock``, which callers own.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

RUN_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_TRACE = re.compile(rf"^(?P<run>{RUN_ID_PATTERN}):(?P<seconds>\d{{1,10}})(?:\.(?P<fraction>\d{{1,6}}))?$")
MAX_EPOCH = 0xFFFFFFFF  # X-Ray trace ids hold the epoch in 8 hex digits
XRAY_VERSION = "1"


class TraceError(ValueError):
    """Text that is not a leg trace; the message names the field it came from."""


@dataclass(frozen=True, order=True, slots=True)
class LegTrace:
    """``<run id>:<epoch>``; ``micros`` is the epoch in microseconds (exact, unlike a float)."""

    run_id: str
    micros: int

    def __post_init__(self) -> None:
        if not re.fullmatch(RUN_ID_PATTERN, self.run_id):
            raise TraceError(f"run id {self.run_id[:80]!r} is not a run id (letters, digits, '_' and '-')")
        if not 0 <= self.micros <= MAX_EPOCH * 1_000_000 + 999_999:
            raise TraceError(f"epoch {self.micros / 1e6} is outside what an X-Ray trace id holds")

    @property
    def epoch(self) -> float:
        return self.micros / 1_000_000

    def __str__(self) -> str:
        seconds, fraction = divmod(self.micros, 1_000_000)
        return f"{self.run_id}:{seconds}.{fraction:06d}" if fraction else f"{self.run_id}:{seconds}"

    @property
    def segment_id(self) -> str:
        """The id of this leg's X-Ray segment: 16 hex digits, the same wherever it is computed."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:16]


def parse(text: str, *, field: str = "trace") -> LegTrace:
    """``text`` as a leg trace; ``TraceError`` naming ``field`` when it is not one."""
    found = _TRACE.match(text) if isinstance(text, str) else None
    if found is None:
        shown = repr(text[:80]) if isinstance(text, str) else type(text).__name__
        raise TraceError(f"{field} must be '<run id>:<epoch seconds>[.<up to 6 digits>]', got {shown}")
    fraction = (found["fraction"] or "").ljust(6, "0")
    trace = LegTrace(found["run"], int(found["seconds"]) * 1_000_000 + int(fraction or 0))
    if trace.micros // 1_000_000 > MAX_EPOCH:
        raise TraceError(f"{field}: epoch {found['seconds']} is outside what an X-Ray trace id holds")
    return trace


def run_trace(run_id: str, now: float) -> LegTrace:
    """The run's own trace (its intake leg's): the accept time to the second."""
    return LegTrace(run_id, int(now) * 1_000_000)


def leg_at(run_id: str, epoch: float) -> LegTrace:
    """The trace of a leg of ``run_id`` that began at ``epoch`` (rounded to the microsecond)."""
    return LegTrace(run_id, round(epoch * 1_000_000))


class LegClock:
    """Hands out leg traces whose epochs strictly increase in this process, so two legs begun in
    the same microsecond (threads of one packaging, a clock that stands still in a test) differ."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def new_leg(self, run_id: str, now: float) -> LegTrace:
        micros = round(now * 1_000_000)
        with self._lock:
            micros = max(micros, self._last + 1)
            self._last = micros
        return LegTrace(run_id, micros)


LEGS = LegClock()
"""The process's one leg clock (every component of a process shares it)."""


def xray_trace_id(run: LegTrace) -> str:
    """The run's X-Ray trace id, from its trace (``RunRecord.trace_id``): the same in every leg."""
    digest = hashlib.sha256(run.run_id.encode()).hexdigest()[:24]
    return f"{XRAY_VERSION}-{run.micros // 1_000_000:08x}-{digest}"


def lambda_trace_root(header: str | None) -> str | None:
    """The ``Root`` of a Lambda invocation's ``_X_AMZN_TRACE_ID`` (``Root=1-...;Parent=...;Sampled=1``)."""
    for part in (header or "").split(";"):
        key, _, val = part.strip().partition("=")
        if key == "Root" and re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", val):
            return val
    return None
