"""EMF metrics of runs and orders: what each one measures, and how a wake-up writes them.

The orchestrator decides every state change, so it is the one writer. A metric is recorded only
for a transition whose conditional write succeeded (``Orchestrator._write``, the finalize that
won), so a wake-up that loses its lease, or a message delivered twice, never counts anything
twice: the second attempt finds the order already moved and writes nothing. The documents of a
write are recorded together right after it (``collecting``, ``record``), in one call of the writer
(one flush of stdout per write, not per document: a wide layer is many documents), so a wake-up
that dies (a Lambda timeout, a crash) loses at most the documents of the write it was in the
middle of: a transition is counted at most once. Documents are CloudWatch Embedded
Metric Format, built by Powertools' EMF provider: on Lambda on stdout, which CloudWatch Logs turns
into metrics; in embedded mode in a JSON-lines file (``EmfWriter.to_file``), never the CLI's stdout.

Every value comes from the records' own timestamps (``schema.records``), in seconds:

- ``RunsFinished`` (Count; dimension ``Outcome``): a run reached its final status.
- ``RunDuration``: accepted (``created_at``) to final (the time the run was finalized).
- ``OrdersDispatched`` (Count; ``Target``): an order moved to ``running`` and was handed to its worker.
- ``QueueWait``: ready to dispatched. Ready is the latest of: the end of packaging (``packaged_at``),
  the end (``finished_at``) of each dependency (a skipped one ends when it is skipped), and for an
  order behind an environment's rules the moment they passed (the last approval, the end of the
  wait timer). So it measures the engine (its wake-ups, its concurrency caps, its locks), not the
  time a reviewer took.
- ``DispatchLatency``: dispatched (``dispatched_at``) to the worker's start (``started_at`` as the
  worker reported it); absent when no worker reported a start (the watchdog spoke for it).
- ``OrderDuration``: the worker's start to its end (``started_at`` to ``finished_at``; the dispatch
  time when no start was reported, the time the result arrived when no end was), for an order
  that was dispatched.
- ``OrdersFinished`` (Count; ``Outcome``, ``Target``): an order reached a final status.

Dimensions are few and small (``service``, ``Outcome``: a final status, ``Target``: lambda or
codebuild), each in a dimension set of its own; the run id, order name, attempt and the leg's
trace are EMF properties, searchable in Logs Insights, never dimensions. Nothing else is written:
no reason, no log text, nothing a command printed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from lambda_runtime.logs import logger
from lambda_runtime.orchestrator.snapshots import cacheable
from lambda_runtime.schema.records import OrderRecord, RunRecord, RunSnapshot
from lambda_runtime.schema.status import RunStatus

NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
SERVICE_ENV = "POWERTOOLS_SERVICE_NAME"
DEFAULT_NAMESPACE = "IacCi"
SERVICE = "iac-ci-orchestrator"  # the orchestrator function's POWERTOOLS_SERVICE_NAME (the construct's)

RUNS_FINISHED = "RunsFinished"
RUN_DURATION = "RunDuration"
ORDERS_DISPATCHED = "OrdersDispatched"
QUEUE_WAIT = "QueueWait"
DISPATCH_LATENCY = "DispatchLatency"
ORDER_DURATION = "OrderDuration"
ORDERS_FINISHED = "OrdersFinished"
SERVICE_DIMENSION = "service"
OUTCOME = "Outcome"
TARGET = "Target"
TIMINGS = (QUEUE_WAIT, DISPATCH_LATENCY, ORDER_DURATION, RUN_DURATION)
# CloudWatch drops EMF timestamps more than 14 days old or 2 hours ahead; a margin inside both
MAX_AGE_SECONDS = 13 * 86400
MAX_AHEAD_SECONDS = 3600

Property = str | int | float


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    unit: MetricUnit
    value: float


@dataclass(frozen=True, slots=True)
class Observation:
    """One EMF document: measures sharing their dimension values and properties, taken at ``at``."""

    measures: tuple[Measure, ...]
    dimensions: Mapping[str, str]
    properties: Mapping[str, Property]
    at: float

    def value(self, name: str) -> float | None:
        return next((m.value for m in self.measures if m.name == name), None)


def _since(start: float | None, end: float | None) -> float | None:
    """``end - start`` in seconds, never negative (the worker's clock may trail ours)."""
    if start is None or end is None:
        return None
    return max(0.0, float(end) - float(start))


def _timed(counter: str, timings: Iterable[tuple[str, float | None]]) -> tuple[Measure, ...]:
    out = [Measure(counter, MetricUnit.Count, 1)]
    out += [Measure(name, MetricUnit.Seconds, round(v, 6)) for name, v in timings if v is not None]
    return tuple(out)


def _properties(run_id: str, trace: str | None, **more: Property | None) -> dict[str, Property]:
    props: dict[str, Property] = {"run_id": run_id}
    if trace:
        props["trace"] = trace
    props.update({k: v for k, v in more.items() if v is not None})
    return props


def ready_at(order: OrderRecord, *, packaged_at: float | None, finished: Mapping[str, float]) -> float | None:
    """When ``order`` became ready to start (see ``QueueWait``); None when nothing says."""
    times = [t for t in (packaged_at, *(finished.get(d) for d in order.depends_on)) if t is not None]
    if order.gated:
        times += [float(a["at"]) for a in order.approvals if a.get("at") is not None]
        if order.wait_seconds:
            times.append(order.wait_until)
    return max(times) if times else None


def order_dispatched(order: OrderRecord, *, run_id: str, ready: float | None, trace: str | None) -> Observation:
    """An order just moved to ``running`` (its ``dispatched_at`` is set)."""
    return Observation(
        _timed(ORDERS_DISPATCHED, [(QUEUE_WAIT, _since(ready, order.dispatched_at))]),
        {TARGET: order.target},
        _properties(run_id, trace, order=order.name, attempt=order.attempt),
        float(order.dispatched_at or 0),
    )


def order_finished(order: OrderRecord, *, run_id: str, reported_by: str | None, started_reported: bool,
                   now: float, trace: str | None) -> Observation:
    """An order just reached its final status (the record already holds the transition's fields).
    ``started_reported``: the worker reported its start (``started_at`` is not the dispatch time)."""
    end = order.finished_at if order.finished_at is not None else now
    timings: list[tuple[str, float | None]] = []
    if order.dispatched_at is not None:
        timings.append((ORDER_DURATION, _since(order.started_at or order.dispatched_at, end)))
        if started_reported:
            timings.append((DISPATCH_LATENCY, _since(order.dispatched_at, order.started_at)))
    return Observation(
        _timed(ORDERS_FINISHED, timings),
        {OUTCOME: order.status.value, TARGET: order.target},
        _properties(run_id, trace, order=order.name, attempt=order.attempt or None, reported_by=reported_by),
        float(end),
    )


def run_finished(run: RunRecord, status: RunStatus, *, finished_at: float, trace: str | None) -> Observation:
    return Observation(
        _timed(RUNS_FINISHED, [(RUN_DURATION, _since(run.created_at, finished_at))]),
        {OUTCOME: status.value},
        _properties(run.run_id, trace, job=run.name or None, trigger=run.trigger),
        float(finished_at),
    )


# ---- the documents ------------------------------------------------------------------------------
def document(obs: Observation, *, namespace: str, service: str, now: float | None = None,
             emf: AmazonCloudWatchEMFProvider | None = None) -> dict[str, object]:
    """``obs`` as one EMF document (Powertools' provider validates names, units and dimensions):
    the primary dimension set is ``service`` alone (the deployment-wide figure), and each
    dimension of ``obs`` is a set of its own (per outcome, per target). Its timestamp is when it
    happened, unless CloudWatch would drop that one (``now``: the time it is written). ``emf``: a
    provider of this namespace and service to reuse (it is cleared afterwards; building one costs
    more than the document)."""
    emf = emf or AmazonCloudWatchEMFProvider(namespace=namespace, service=service)
    for m in obs.measures:
        emf.add_metric(name=m.name, unit=m.unit, value=m.value)
    for key, val in obs.dimensions.items():
        emf.add_dimensions(**{key: val})
    for key, prop in obs.properties.items():
        emf.add_metadata(key=key, value=prop)
    written = time.time() if now is None else now
    at = obs.at if written - MAX_AGE_SECONDS < obs.at < written + MAX_AHEAD_SECONDS else written
    emf.set_timestamp(int(at * 1000))
    try:
        return dict(emf.serialize_metric_set())
    finally:
        emf.clear_metrics()


class EmfWriter:
    """Where a wake-up's documents go, one JSON line each. The documents of one ``write`` (those of
    one state write, ``record``) go to ``out`` in one call: one write and flush of stdout, one open
    of the file, per state write rather than per document, and a line is never split between two
    writers."""

    def __init__(self, out: Callable[[str], None], *, namespace: str = DEFAULT_NAMESPACE, service: str = SERVICE):
        self.namespace = namespace
        self.service = service
        self._out = out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmfWriter:
        """Lambda's: stdout (the function's log), namespace and service as Powertools reads them."""
        env = os.environ if environ is None else environ

        def to_stdout(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        return cls(to_stdout, namespace=env.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE,
                   service=env.get(SERVICE_ENV) or SERVICE)

    @classmethod
    def to_file(cls, path: Path, *, namespace: str = DEFAULT_NAMESPACE) -> EmfWriter:
        """Embedded mode: appended to ``path`` (``metrics.jsonl`` beside ``events.jsonl``)."""
        lock = threading.Lock()

        def append(text: str) -> None:
            with lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(text)

        return cls(append, namespace=namespace)

    def write(self, observations: Iterable[Observation]) -> int:
        """Write the documents; returns the bytes written (0 with ``POWERTOOLS_METRICS_DISABLED``)."""
        if is_metrics_disabled():
            return 0
        emf, now = AmazonCloudWatchEMFProvider(namespace=self.namespace, service=self.service), time.time()
        text = "".join(json.dumps(document(o, namespace=self.namespace, service=self.service, now=now, emf=emf),
                                  separators=(",", ":")) + "\n" for o in observations)
        if text:
            self._out(text)
        return len(text)


_WRITER: ContextVar[EmfWriter | None] = ContextVar("iac_ci_metrics", default=None)


@contextmanager
def collecting(writer: EmfWriter) -> Iterator[None]:
    """Inside the block, what this thread records goes to ``writer`` at once: a wake-up killed by
    its Lambda's timeout has already written the documents of every write it finished."""
    token = _WRITER.set(writer)
    try:
        yield
    finally:
        _WRITER.reset(token)


def record(*observations: Observation) -> None:
    """Write the documents of one state write (every transition it wrote, or the finalize that won)
    to the current ``collecting`` block's writer, in one call (none: dropped, e.g. a test calling a
    method directly). A failed write is logged, never raised: the transitions they count were
    written, and the wake-up goes on."""
    writer = _WRITER.get()
    if writer is None or not observations:
        return
    try:
        writer.write(observations)
    except Exception:
        logger.exception("could not write metrics", extra={"documents": len(observations)})


@dataclass
class _RunTimes:
    packaged_at: float | None = None
    finished: dict[str, float] = field(default_factory=dict)


class ReadyTimes:
    """What ``QueueWait`` needs from earlier reads: when the run was packaged and when each order
    ended. The orchestrator's cached reads (``orchestrator.snapshots``) leave both out, as neither
    changes again, so they are kept here from the full read that precedes any cached one and from
    the transitions written since.

    It must know a run for as long as that cache can serve it a read, or the run's orders lose
    their ``QueueWait``. The cache keeps the runs of its last full reads of running runs (oldest
    out first). So this keeps the runs that cache keeps (``snapshots.cacheable``: a run in any other
    status dispatches nothing), refreshed by every read, and evicts the one read longest ago: while
    the cache still holds a run, every other run read since was in the cache beside it or entered
    it after it, fewer than twice the cache's capacity in all, so with ``capacity`` at least that
    the run is still here (the engine sizes it from the cache's).
    """

    def __init__(self, capacity: int):
        self._runs: OrderedDict[str, _RunTimes] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def observe(self, snap: RunSnapshot, names: Iterable[str] | None = None) -> None:
        """Remember what ``snap`` says (only about ``names``, when given)."""
        run = snap.run
        if run is None or not cacheable(snap):
            return
        with self._lock:
            times = self._touch(run.run_id)
            if run.packaged_at is not None:
                times.packaged_at = float(run.packaged_at)
            orders = snap.orders.values() if names is None else (snap.orders[n] for n in names)
            known = times.finished
            for order in orders:
                if order.finished_at is not None and order.name not in known:
                    known[order.name] = float(order.finished_at)

    def _touch(self, run_id: str) -> _RunTimes:
        """The run's times, now the most recently read (the lock is held)."""
        times = self._runs.get(run_id)
        if times is not None:
            self._runs.move_to_end(run_id)
            return times
        times = self._runs[run_id] = _RunTimes()
        while len(self._runs) > self._capacity:
            self._runs.popitem(last=False)
        return times

    def ready_at(self, run_id: str, order: OrderRecord) -> float | None:
        with self._lock:
            times = self._runs.get(run_id)
            if times is None:
                return None
            return ready_at(order, packaged_at=times.packaged_at, finished=times.finished)
