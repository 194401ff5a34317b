"""Leg traces, the X-Ray ids and segments built from them, the leg context (log keys, events) and
the EMF documents of runs and orders: the pure parts of ``lambda_runtime.observability``, and the
two that need a table (order events' traces, ready times beside the snapshot cache) on moto."""

from __future__ import annotations

import io
import json
import logging
import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from iac_ci.embedded.local_dispatch import LocalDispatcher
from lambda_runtime.logs import log_keys, logger
from lambda_runtime.observability import legs, metrics, trace
from lambda_runtime.observability.legs import Leg, Legs, carry, current_trace
from lambda_runtime.observability.trace import LegClock, LegTrace, TraceError
from lambda_runtime.observability.xray import HEADER, Segment, SegmentEmitter, daemon_address
from lambda_runtime.orchestrator.engine import Orchestrator
from lambda_runtime.orchestrator.snapshots import SnapshotCache
from lambda_runtime.schema.records import OrderRecord, RunRecord, RunSnapshot
from lambda_runtime.schema.status import OrderStatus, RunStatus
from lambda_runtime.store.runs import RunStore, Transition

RUN = "3f2a9c0d1b4e5f67"
NOW = 1_750_000_000.0


# ---- the trace format -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "micros"), [
    (f"{RUN}:1750000000", 1_750_000_000_000_000),  # the run's own trace (intake), as it always was
    (f"{RUN}:1750000000.123456", 1_750_000_000_123_456),
    (f"{RUN}:1750000000.5", 1_750_000_000_500_000),
    ("r1:1", 1_000_000),
])
def test_a_trace_parses_and_formats_back(text: str, micros: int) -> None:
    parsed = trace.parse(text)
    assert (parsed.run_id, parsed.micros) == (text.partition(":")[0], micros)
    assert trace.parse(str(parsed)) == parsed
    assert str(parsed) == (text if not text.endswith(".5") else f"{RUN}:1750000000.500000")


@pytest.mark.parametrize("text", [
    "", RUN, f"{RUN}:", f":{NOW}", f"{RUN}:abc", f"{RUN}:1.1234567", f"{RUN}:-5", f"a:b:{int(NOW)}",
    f"{RUN}:99999999999", f"../{RUN}:1", f"{RUN} :1",
])
def test_text_that_is_no_trace_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(TraceError, match="^the order's trace"):
        trace.parse(text, field="the order's trace")


def test_two_legs_begun_in_the_same_second_or_microsecond_differ_and_grow() -> None:
    clock = LegClock()
    same = [clock.new_leg(RUN, NOW) for _ in range(3)]  # a clock that stands still
    later = clock.new_leg(RUN, NOW + 0.000_250)
    assert [t.micros for t in same] == [1_750_000_000_000_000, 1_750_000_000_000_001, 1_750_000_000_000_002]
    assert later.micros == 1_750_000_000_000_250
    assert len({str(t) for t in [*same, later]}) == 4
    assert str(trace.run_trace(RUN, NOW + 0.9)) == f"{RUN}:1750000000"  # the intake leg: to the second


def test_legs_minted_from_many_threads_never_collide() -> None:
    clock = LegClock()
    with ThreadPoolExecutor(8) as pool:
        minted = list(pool.map(lambda _: clock.new_leg(RUN, NOW), range(400)))
    assert len({t.micros for t in minted}) == 400


# ---- X-Ray ids ------------------------------------------------------------------------------------
def test_every_leg_of_a_run_derives_the_same_xray_trace_id() -> None:
    run = trace.parse(f"{RUN}:{int(NOW)}")
    xray_id = trace.xray_trace_id(run)
    assert xray_id == trace.xray_trace_id(trace.parse(str(run)))
    version, epoch, unique = xray_id.split("-")
    assert (version, int(epoch, 16), len(unique)) == ("1", int(NOW), 24)
    assert int(unique, 16) >= 0  # hex
    other = trace.xray_trace_id(trace.parse(f"0000000000000001:{int(NOW)}"))
    assert other != xray_id and other.split("-")[1] == epoch


def test_segment_ids_are_16_hex_and_differ_per_leg() -> None:
    a, b = trace.parse(f"{RUN}:1750000000.000001"), trace.parse(f"{RUN}:1750000000.000002")
    assert len(a.segment_id) == 16 and int(a.segment_id, 16) >= 0
    assert a.segment_id != b.segment_id and a.segment_id == trace.parse(str(a)).segment_id


def test_the_root_of_a_lambda_trace_header() -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert trace.lambda_trace_root(header) == "1-5759e988-bd862e3fe1be46a994272793"
    assert trace.lambda_trace_root(None) is None and trace.lambda_trace_root("Root=garbage") is None


@pytest.mark.parametrize(("value", "address"), [
    ("127.0.0.1:2000", ("127.0.0.1", 2000)),
    ("169.254.79.129:2000", ("169.254.79.129", 2000)),
    ("tcp:127.0.0.1:2000 udp:127.0.0.2:2001", ("127.0.0.2", 2001)),
    ("", None), (None, None), ("tcp:127.0.0.1:2000", None), ("localhost", None), ("h:70000", None),
])
def test_the_daemon_address_variable(value: str | None, address: tuple[str, int] | None) -> None:
    assert daemon_address(value) == address


def test_tracing_turned_off_sends_nothing() -> None:
    env = {"AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000", "POWERTOOLS_TRACE_DISABLED": "true"}
    assert not SegmentEmitter.from_env(env).enabled
    assert SegmentEmitter.from_env({"AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000"}).enabled
    assert not SegmentEmitter.from_env({}).emit(Segment("n", "0" * 16, "1-0-0", 1.0, 2.0))


# ---- segments of legs -----------------------------------------------------------------------------
def test_the_intake_leg_is_the_root_and_every_other_leg_its_child() -> None:
    run = trace.parse(f"{RUN}:{int(NOW)}")
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    intake = legs.segment(Leg("intake", run, NOW, run_trace=run, outcome="accepted"), NOW + 0.1)
    wake = Leg("orchestrator", trace.parse(f"{RUN}:1750000002.5"), NOW + 2.5, outcome="evaluated")
    assert legs.segment(wake, NOW + 3) is None  # before it knows its run: no segment
    wake.bind(str(run))
    child = legs.segment(wake, NOW + 3, lambda_header=header)
    assert intake is not None and child is not None
    assert intake.document() == {
        "name": "iac-ci-intake", "id": run.segment_id, "trace_id": trace.xray_trace_id(run),
        "start_time": NOW, "end_time": NOW + 0.1,
        "annotations": {"run_id": RUN, "leg": "intake", "leg_trace": str(run), "outcome": "accepted"}}
    doc = child.document()
    assert (doc["trace_id"], doc["parent_id"], doc["name"]) == (intake.trace_id, intake.id, "iac-ci-orchestrator")
    assert doc["annotations"]["lambda_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert doc["metadata"] == {"iac_ci": {"lambda_trace_header": header}}


def test_a_leg_whose_run_trace_is_unreadable_is_logged_not_traced() -> None:
    leg = Leg("packaging", trace.parse(f"{RUN}:1"), NOW)
    leg.bind("not a trace")
    assert leg.run_trace is None and legs.segment(leg, NOW + 1) is None


def test_segments_reach_a_udp_listener_in_the_daemon_protocol() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        emitter = SegmentEmitter(sock.getsockname())
        run = trace.parse(f"{RUN}:{int(NOW)}")
        with Legs(emitter, clock=lambda: NOW).leg("intake", RUN, trace=run, run_trace=str(run)):
            pass
        data = sock.recv(65536)
    header, _, body = data.partition(b"\n")
    assert header + b"\n" == HEADER and json.loads(header) == {"format": "json", "version": 1}
    assert json.loads(body)["id"] == run.segment_id


# ---- the leg context: log keys, events, thread pools ---------------------------------------------
@pytest.fixture()
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger._logger.removeHandler(handler)


def test_every_line_logged_in_a_leg_carries_its_trace_threads_included(log_lines) -> None:
    wake = Legs(clock=lambda: NOW)

    def in_pool(i: int) -> str | None:
        logger.info("pool line", extra={"i": i})
        return current_trace()

    with log_keys(run_id=RUN), wake.leg("orchestrator", RUN) as leg:
        logger.info("leg line")
        with ThreadPoolExecutor(2) as pool:
            seen = list(pool.map(carry(in_pool), range(4)))
        with wake.leg("packaging", RUN) as inner:  # nested: the inner leg's, then the outer's again
            logger.info("inner line")
        logger.info("after inner")
    logger.info("outside")
    lines = {(line["message"], line.get("i")): line for line in log_lines()}
    assert seen == [str(leg.trace)] * 4
    assert lines[("leg line", None)]["trace"] == str(leg.trace) and lines[("leg line", None)]["run_id"] == RUN
    assert {lines[("pool line", i)]["trace"] for i in range(4)} == {str(leg.trace)}
    assert {lines[("pool line", i)]["run_id"] for i in range(4)} == {RUN}
    assert lines[("inner line", None)]["trace"] == str(inner.trace) != str(leg.trace)
    assert lines[("after inner", None)]["trace"] == str(leg.trace)
    assert "trace" not in lines[("outside", None)] and "run_id" not in lines[("outside", None)]
    assert current_trace() is None


def test_a_leg_ended_by_an_error_says_so_on_its_segment() -> None:
    sent: list[Segment] = []

    class Capture(SegmentEmitter):
        def emit(self, segment: Segment) -> bool:
            sent.append(segment)
            return True

    run = trace.parse(f"{RUN}:{int(NOW)}")
    with pytest.raises(RuntimeError), Legs(Capture(("127.0.0.1", 9)), clock=lambda: NOW).leg(
            "packaging", RUN, run_trace=str(run)):
        raise RuntimeError("boom")
    assert [s.annotations["outcome"] for s in sent] == ["error"]


def test_events_carry_the_trace_of_the_leg_that_writes_them() -> None:
    store = RunStore(None, "orders", "events", clock=lambda: NOW)
    assert "trace" not in store.event_put(RUN, "#job", "job_started")["Put"]["Item"]
    with Legs(clock=lambda: NOW).leg("packaging", RUN) as leg:
        item = store.event_put(RUN, "#job", "job_started")["Put"]["Item"]
    assert item["trace"] == {"S": str(leg.trace)} and "order_trace" not in item


def test_an_orders_events_carry_its_own_legs_trace_beside_the_writers(clients, stack) -> None:
    settings, _queues = stack
    store = RunStore(clients.dynamodb, settings.orders_table, settings.events_table, clock=lambda: NOW)
    own = f"{RUN}:1749999990.250000"  # minted when it was packaged
    put_running_run(store, RUN, [order(trace=own), OrderRecord(name="lint", target="lambda")])
    start = {"attempt": 1, "dispatched_at": NOW}
    moves = [Transition("plan", (OrderStatus.QUEUED,), OrderStatus.RUNNING, start),
             Transition("lint", (OrderStatus.QUEUED,), OrderStatus.RUNNING, start)]
    with Legs(clock=lambda: NOW).leg("orchestrator", RUN) as wake:
        assert store.transition_many(RUN, moves, order_traces={"plan": own, "lint": ""}) == {"plan", "lint"}
    events = {e["order_name"]: e for e in store.events(RUN)}
    assert (events["plan"]["order_trace"], events["plan"]["trace"]) == (own, str(wake.trace))
    assert "order_trace" not in events["lint"] and events["lint"]["trace"] == str(wake.trace)  # it has none


# ---- metrics --------------------------------------------------------------------------------------
def order(**fields) -> OrderRecord:
    return OrderRecord(name="plan", target="lambda", **fields)


def test_an_order_that_ran_reports_its_duration_and_dispatch_latency() -> None:
    done = order(status=OrderStatus.SUCCEEDED, attempt=1, dispatched_at=NOW, started_at=NOW + 2, finished_at=NOW + 7)
    obs = metrics.order_finished(done, run_id=RUN, reported_by="worker", started_reported=True, now=NOW + 9,
                                 trace="t")
    assert {m.name: m.value for m in obs.measures} == {"OrdersFinished": 1, "OrderDuration": 5.0,
                                                       "DispatchLatency": 2.0}
    assert dict(obs.dimensions) == {"Outcome": "succeeded", "Target": "lambda"}
    assert dict(obs.properties) == {"run_id": RUN, "trace": "t", "order": "plan", "attempt": 1,
                                    "reported_by": "worker"}
    assert obs.at == NOW + 7


def test_an_order_the_watchdog_spoke_for_has_no_dispatch_latency() -> None:
    late = order(status=OrderStatus.TIMED_OUT, attempt=1, dispatched_at=NOW, started_at=NOW, finished_at=NOW + 60)
    obs = metrics.order_finished(late, run_id=RUN, reported_by="watchdog", started_reported=False, now=NOW + 61,
                                 trace=None)
    assert obs.value("DispatchLatency") is None and obs.value("OrderDuration") == 60.0


def test_an_order_that_never_ran_is_only_counted() -> None:
    skipped = order(status=OrderStatus.SKIPPED)
    obs = metrics.order_finished(skipped, run_id=RUN, reported_by=None, started_reported=False, now=NOW, trace=None)
    assert [m.name for m in obs.measures] == ["OrdersFinished"] and obs.at == NOW


def test_a_worker_clock_behind_ours_never_makes_a_negative_time() -> None:
    done = order(status=OrderStatus.SUCCEEDED, dispatched_at=NOW, started_at=NOW - 0.5, finished_at=NOW + 1)
    obs = metrics.order_finished(done, run_id=RUN, reported_by="worker", started_reported=True, now=NOW, trace=None)
    assert obs.value("DispatchLatency") == 0.0


def test_ready_is_the_last_of_packaging_dependencies_and_the_gate() -> None:
    finished = {"a": NOW + 10, "b": NOW + 20}
    assert metrics.ready_at(order(depends_on=("a", "b")), packaged_at=NOW, finished=finished) == NOW + 20
    assert metrics.ready_at(order(), packaged_at=NOW, finished=finished) == NOW
    gated = order(depends_on=("a",), approvals_needed=1, approvals=({"by": "x", "at": NOW + 50},))
    assert metrics.ready_at(gated, packaged_at=NOW, finished=finished) == NOW + 50  # not the reviewer's wait
    timer = order(wait_seconds=30, awaiting_since=NOW + 5)
    assert metrics.ready_at(timer, packaged_at=NOW, finished={}) == NOW + 35
    assert metrics.ready_at(order(), packaged_at=None, finished={}) is None


def put_running_run(store: RunStore, run_id: str, orders: list[OrderRecord]) -> None:
    """A run as packaging leaves it: its orders stored, then ``running`` with ``packaged_at``."""
    assert store.create_run(RunRecord(run_id=run_id, status=RunStatus.PACKAGING, trace_id=f"{run_id}:1"))
    assert store.put_orders(run_id, orders)
    assert store.transition_run(run_id, from_status=RunStatus.PACKAGING, to=RunStatus.RUNNING,
                                fields={"packaged_at": NOW, "order_count": len(orders)})


def test_ready_times_outlast_the_snapshot_cache(clients, stack) -> None:
    """The engine's pattern (read through the cache, then observe) with a cache of 3 runs: however
    other runs are read meanwhile, a run the cache still serves from cache keeps its ready times."""
    settings, _queues = stack
    store = RunStore(clients.dynamodb, settings.orders_table, settings.events_table, clock=lambda: NOW)
    cache, times = SnapshotCache(store, capacity=3), metrics.ReadyTimes(capacity=2 * 3)
    tag = secrets.token_hex(3)
    target, *others = [f"{tag}-{i}" for i in range(6)]
    for run_id in (target, *others):
        put_running_run(store, run_id, [order(status=OrderStatus.SUCCEEDED, finished_at=NOW + 4),
                                        OrderRecord(name="apply", target="lambda", depends_on=("plan",))])
    packaging = [f"{tag}-p{i}" for i in range(8)]  # read by the orchestrator before they run
    for run_id in packaging:
        assert store.create_run(RunRecord(run_id=run_id, status=RunStatus.PACKAGING, trace_id=f"{run_id}:1"))

    def read(run_id: str) -> RunSnapshot:
        snap = cache.load(run_id)
        times.observe(snap)
        return snap

    # the cache: others[0], others[1], target (oldest first); then a read of each of those
    for run_id in (others[0], others[1], target, others[0], others[1], *packaging):
        read(run_id)
    read(others[2])  # enters the cache; others[0] leaves it
    read(others[3])  # ... and others[1]; the cache still holds target
    cached = read(target)
    assert cached.run is not None and cached.run.packaged_at is None  # served from cache: no times in it
    assert cached.orders["plan"].finished_at is None
    assert times.ready_at(target, cached.orders["apply"]) == NOW + 4


def test_the_engine_keeps_ready_times_of_twice_the_runs_its_snapshot_cache_keeps(clients, stack,
                                                                                   tmp_path: Path) -> None:
    """What the test above shows for a cache of 3 holds for the engine's own pair, whatever the
    cache's capacity (the engine sizes one from the other)."""
    settings, _queues = stack
    engine = Orchestrator(settings, clients, LocalDispatcher({}, log_dir=tmp_path))
    assert engine.ready_times.capacity >= 2 * engine.snapshots._capacity > 0


def test_ready_times_survive_reads_that_leave_them_out() -> None:
    times = metrics.ReadyTimes(capacity=2)
    run = RunRecord(run_id=RUN, status=RunStatus.RUNNING, trace_id=f"{RUN}:1", packaged_at=NOW)
    dep = order(status=OrderStatus.SUCCEEDED, finished_at=NOW + 4)
    times.observe(RunSnapshot(run, {"plan": dep}))
    cached = RunSnapshot(RunRecord(run_id=RUN, status=RunStatus.RUNNING), {"plan": order(status=OrderStatus.SUCCEEDED)})
    times.observe(cached)  # a projected read: neither packaged_at nor finished_at
    apply = OrderRecord(name="apply", depends_on=("plan",))
    assert times.ready_at(RUN, apply) == NOW + 4
    assert times.ready_at("other", apply) is None


@pytest.mark.filterwarnings("ignore:This metric doesn't meet")  # Powertools checks NOW against the real clock
def test_emf_documents_have_low_cardinality_dimensions_and_the_ids_as_properties() -> None:
    obs = metrics.order_dispatched(order(attempt=1, dispatched_at=NOW + 3), run_id=RUN, ready=NOW, trace="t")
    doc = metrics.document(obs, namespace="IacCi/Test", service=metrics.SERVICE, now=NOW + 5)
    directive = doc["_aws"]["CloudWatchMetrics"]
    assert directive == [{"Namespace": "IacCi/Test", "Dimensions": [["service"], ["Target"]],
                          "Metrics": [{"Name": "OrdersDispatched", "Unit": "Count"},
                                      {"Name": "QueueWait", "Unit": "Seconds"}]}]
    assert doc["_aws"]["Timestamp"] == int((NOW + 3) * 1000)  # when it happened
    stale = metrics.document(obs, namespace="IacCi/Test", service=metrics.SERVICE, now=NOW + 15 * 86400)
    assert stale["_aws"]["Timestamp"] == int((NOW + 15 * 86400) * 1000)  # not dropped
    assert {k: v for k, v in doc.items() if k != "_aws"} == {
        "service": "iac-ci-orchestrator", "Target": "lambda", "run_id": RUN, "trace": "t", "order": "plan",
        "attempt": 1, "OrdersDispatched": [1.0], "QueueWait": [3.0]}


def test_a_document_is_written_when_recorded_so_a_killed_wake_up_keeps_its_counts(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    writer = metrics.EmfWriter.to_file(path, namespace="IacCi/Test")
    run = RunRecord(run_id=RUN, name="job", created_at=NOW)
    metrics.record(metrics.run_finished(run, RunStatus.SUCCEEDED, finished_at=NOW + 1, trace=None))  # no block
    assert not path.exists()

    def outcomes() -> list[tuple[str, list[float], list[float]]]:
        docs = [json.loads(line) for line in path.read_text().splitlines()]
        return [(d["Outcome"], d["RunDuration"], d["RunsFinished"]) for d in docs]

    with pytest.raises(RuntimeError), metrics.collecting(writer):
        metrics.record(metrics.run_finished(run, RunStatus.FAILED, finished_at=NOW + 2, trace=None))
        assert outcomes() == [("failed", [2.0], [1.0])]  # already out: a Lambda timeout now loses nothing
        raise RuntimeError("lease lost")
    assert outcomes() == [("failed", [2.0], [1.0])]  # and not again when the block ends


def test_the_documents_of_one_write_go_out_in_one_call() -> None:
    """One state write's documents: one call of ``out`` (one stdout flush, one open of the file)."""
    calls: list[str] = []
    run = RunRecord(run_id=RUN, created_at=NOW)
    batch = [metrics.run_finished(run, status, finished_at=NOW + 1, trace=None)
             for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)]
    with metrics.collecting(metrics.EmfWriter(calls.append)):
        metrics.record(*batch)
        metrics.record()  # a write that counts nothing: no call
    assert len(calls) == 1
    assert [json.loads(line)["Outcome"] for line in calls[0].splitlines()] == ["succeeded", "failed", "cancelled"]


def test_a_document_that_cannot_be_written_is_logged_and_the_wake_up_goes_on(log_lines) -> None:
    def broken(_text: str) -> None:
        raise OSError("disk full")

    run = RunRecord(run_id=RUN, created_at=NOW)
    with metrics.collecting(metrics.EmfWriter(broken)):
        metrics.record(metrics.run_finished(run, RunStatus.FAILED, finished_at=NOW, trace=None))
    assert [line["message"] for line in log_lines()] == ["could not write metrics"]


def test_metrics_disabled_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    writer = metrics.EmfWriter.to_file(tmp_path / "m.jsonl")
    run = RunRecord(run_id=RUN, created_at=NOW)
    assert writer.write([metrics.run_finished(run, RunStatus.FAILED, finished_at=NOW, trace=None)]) == 0
    assert not (tmp_path / "m.jsonl").exists()


def test_the_lambda_writer_takes_namespace_and_service_from_the_environment() -> None:
    writer = metrics.EmfWriter.from_env({"POWERTOOLS_METRICS_NAMESPACE": "IacCi/StackIacCiABCD",
                                         "POWERTOOLS_SERVICE_NAME": "iac-ci-orchestrator"})
    assert (writer.namespace, writer.service) == ("IacCi/StackIacCiABCD", "iac-ci-orchestrator")
    assert metrics.EmfWriter.from_env({}).namespace == "IacCi"


def test_writes_from_many_threads_stay_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    writer = metrics.EmfWriter.to_file(path)
    run = RunRecord(run_id=RUN, created_at=NOW)
    batch = [metrics.run_finished(run, RunStatus.SUCCEEDED, finished_at=NOW + i, trace=None) for i in range(20)]
    threads = [threading.Thread(target=writer.write, args=(batch,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([json.loads(line) for line in path.read_text().splitlines()]) == 160


def test_leg_trace_rejects_an_epoch_xray_cannot_hold() -> None:
    with pytest.raises(TraceError):
        LegTrace(RUN, (0xFFFFFFFF + 1) * 1_000_000)
