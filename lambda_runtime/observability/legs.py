"""The leg a piece of code runs in: its trace on every log line and order event, and its X-Ray segment.

``Legs.leg(kind, run_id)`` opens a leg (intake, packaging, one orchestrator wake-up) for the
current thread: its trace (``trace.LegTrace``) is the ``trace`` key of every structured log line
logged inside, and ``current_trace()`` is what the events written inside carry (``store.runs``).
An order's event items (its moves, and a reviewer's approval or rejection of it) also carry the
order's own leg trace (``order_trace``), which is the ``trace`` of its EventBridge events
(``notify.events``).
When the leg ends its segment is sent (``xray``), filed under the run's X-Ray trace once the leg
knows the run's own trace (``Leg.bind``, from the run item). An order's leg runs in its worker;
its segment is sent by the orchestrator when the order ends (``Legs.send``), from the times the
worker reported.

Thread pools inside a leg run their tasks through ``carry`` so those threads are in the leg too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, ParamSpec, TypeVar

from lambda_runtime.logs import current_keys, log_keys, logger
from lambda_runtime.observability import trace as traces
from lambda_runtime.observability.trace import LEGS, LegClock, LegTrace, TraceError
from lambda_runtime.observability.xray import LAMBDA_TRACE_ENV, Annotation, Segment, SegmentEmitter

P = ParamSpec("P")
T = TypeVar("T")

LegKind = Literal["intake", "packaging", "orchestrator", "order"]
SEGMENT_NAMES: dict[str, str] = {
    "intake": "iac-ci-intake", "packaging": "iac-ci-packaging", "orchestrator": "iac-ci-orchestrator",
    "order": "iac-ci-order",
}
LOG_KEY = "trace"


@dataclass
class Leg:
    """One leg of a run. ``run_trace`` is the run's own trace (its intake leg's); ``outcome`` and
    ``notes`` end up on the segment (an annotation, metadata)."""

    kind: LegKind
    trace: LegTrace
    started_at: float
    run_trace: LegTrace | None = None
    order: str | None = None
    outcome: str | None = None
    notes: dict[str, Annotation] = field(default_factory=dict)

    def bind(self, run_trace: str) -> None:
        """File this leg under the run whose trace id (``RunRecord.trace_id``) is ``run_trace``."""
        if self.run_trace is not None or not run_trace:
            return
        try:
            self.run_trace = traces.parse(run_trace, field="the run's trace_id")
        except TraceError as exc:  # an old or foreign item: the leg is logged, not traced
            logger.warning("run trace not understood; no X-Ray segment for this leg", extra={"error": str(exc)})


def segment(leg: Leg, end: float, *, lambda_header: str | None = None) -> Segment | None:
    """The X-Ray segment of ``leg`` (None before it knows its run). The intake leg's is the root of
    the run's trace; every other leg's parent is that root."""
    root = leg.run_trace
    if root is None:
        return None
    annotations: dict[str, Annotation] = {"run_id": leg.trace.run_id, "leg": leg.kind, "leg_trace": str(leg.trace)}
    if leg.order is not None:
        annotations["order"] = leg.order
    if leg.outcome is not None:
        annotations["outcome"] = leg.outcome
    metadata: dict[str, Annotation] = dict(leg.notes)
    lambda_root = traces.lambda_trace_root(lambda_header)
    if lambda_root is not None:  # the invocation's own trace, for the way back from this one
        annotations["lambda_trace_id"] = lambda_root
        metadata["lambda_trace_header"] = str(lambda_header)
    return Segment(
        name=SEGMENT_NAMES[leg.kind], id=leg.trace.segment_id, trace_id=traces.xray_trace_id(root),
        start_time=leg.started_at, end_time=end,
        parent_id=None if leg.trace == root else root.segment_id,
        annotations=annotations, metadata=metadata,
    )


_CURRENT: ContextVar[Leg | None] = ContextVar("iac_ci_leg", default=None)


def current() -> Leg | None:
    return _CURRENT.get()


def current_trace() -> str | None:
    """The trace of the leg this thread is in (what an event written now carries)."""
    leg = _CURRENT.get()
    return str(leg.trace) if leg is not None else None


def carry(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn``, to run in another thread (a pool's) in the caller's leg and with its log keys."""
    leg, keys = _CURRENT.get(), current_keys()

    def in_leg(*args: P.args, **kwargs: P.kwargs) -> T:
        token = _CURRENT.set(leg)
        try:
            with log_keys(**keys):
                return fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)

    return in_leg


class Legs:
    """Opens a component's legs and sends their segments (``emitter``; times from ``clock``)."""

    def __init__(self, emitter: SegmentEmitter | None = None, *, clock: Callable[[], float] = time.time,
                 legs: LegClock = LEGS):
        self.emitter = emitter if emitter is not None else SegmentEmitter(None)
        self.clock = clock
        self._legs = legs

    @classmethod
    def from_env(cls, *, clock: Callable[[], float] = time.time) -> Legs:
        return cls(SegmentEmitter.from_env(), clock=clock)

    def new_trace(self, run_id: str) -> LegTrace:
        """A trace for a leg that begins now (an order's, minted when it is packaged)."""
        return self._legs.new_leg(run_id, self.clock())

    @contextmanager
    def leg(self, kind: LegKind, run_id: str, *, trace: LegTrace | None = None,
            run_trace: str | None = None) -> Iterator[Leg]:
        """Run the block as a leg of ``run_id`` (a new trace unless ``trace`` is given)."""
        now = self.clock()
        leg = Leg(kind, trace or self._legs.new_leg(run_id, now), now)
        if run_trace:
            leg.bind(run_trace)
        token = _CURRENT.set(leg)
        try:
            with log_keys(**{LOG_KEY: str(leg.trace)}):
                yield leg
        except BaseException:
            leg.outcome = leg.outcome or "error"
            raise
        finally:
            _CURRENT.reset(token)
            self.send(leg, self.clock(), lambda_header=os.environ.get(LAMBDA_TRACE_ENV))

    def send(self, leg: Leg, end: float, *, lambda_header: str | None = None) -> None:
        """Send ``leg``'s segment (nothing when tracing is off or the leg does not know its run)."""
        if not self.emitter.enabled:
            return
        built = segment(leg, end, lambda_header=lambda_header)
        if built is not None:
            self.emitter.emit(built)
