"""Observability of whole runs on the embedded stack: the orchestrator's real EMF documents (in
``metrics.jsonl``, never on stdout), the X-Ray segments every leg sends to a real UDP listener on
loopback (one trace per run, one segment per leg, the intake leg the parent of all), and the
leg traces on order events, log lines and the orders' own environment."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from support.faults.chaos import CrashAt, InjectedCrash
from support.waiting import wait_for

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.logs import logger
from lambda_runtime.observability import trace
from lambda_runtime.observability.metrics import EmfWriter
from lambda_runtime.observability.xray import DAEMON_ADDRESS_ENV, HEADER
from lambda_runtime.schema.events import ORDER_STATE_CHANGE

pytestmark = pytest.mark.slow

CANARY = "tok-" + secrets.token_hex(12)  # an order's secret: in no metric, no segment
JOB = {
    "username": "tester",
    "name": "observed",
    "orders": [
        {"name": "build", "target": "lambda", "cmds": ['echo "leg=$IAC_CI_TRACE_ID"']},
        {"name": "test", "depends_on": ["build"], "cmds": ['echo "leg=$IAC_CI_TRACE_ID"']},
        {"name": "lint", "target": "lambda", "cmds": ["exit 3"]},
        {"name": "deploy", "depends_on": ["lint"], "cmds": ["true"]},
        {"name": "notify", "target": "lambda", "secrets": [{"env": "TOKEN", "ssm": "/iac-ci/obs/token"}],
         "cmds": ['echo "token=$TOKEN"']},
    ],
}
DISPATCHED = {"build", "test", "lint", "notify"}


class Daemon:
    """A stand-in X-Ray daemon: a UDP socket on loopback collecting every segment sent to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        host, port = self.sock.getsockname()
        self.address = f"{host}:{port}"
        self.raw: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.raw.append(self.sock.recv(65536))
            except TimeoutError:
                continue

    def segments(self, run_id: str) -> list[dict[str, Any]]:
        out = []
        for data in list(self.raw):
            header, _, body = data.partition(b"\n")
            assert header + b"\n" == HEADER
            doc = json.loads(body)
            if doc["annotations"]["run_id"] == run_id:
                out.append(doc)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class LogLines(logging.Handler):
    """Every structured line the runtime logs, as JSON (the logger's own formatter)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logger.registered_formatter)
        self.stream = io.StringIO()
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock_lines:
            self.stream.write(line + "\n")

    def lines(self) -> list[dict[str, Any]]:
        with self._lock_lines:
            return [json.loads(line) for line in self.stream.getvalue().splitlines()]


class Seam:
    """The orchestrator's checkpoint seam: a line logged inside every wake-up (it must carry that
    leg's trace), then the crash a test arms."""

    def __init__(self) -> None:
        self.crash: CrashAt | None = None

    def __call__(self, point: str) -> None:
        logger.info("checkpoint", extra={"point": point})
        if self.crash is not None:
            self.crash(point)


class Tee(io.TextIOBase):
    """sys.stdout, also kept: what anything in the process printed while the run ran."""

    def __init__(self, out: Any) -> None:
        self.out, self.kept = out, io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        return int(self.out.write(text))

    def flush(self) -> None:
        self.out.flush()


@pytest.fixture(scope="module")
def observed(aws) -> Iterator[dict[str, Any]]:
    """One traced run on its own stack (the daemon address is read when the stack is built)."""
    daemon, lines, prefix, seam = Daemon(), LogLines(), "x" + secrets.token_hex(4), Seam()
    saved = os.environ.get(DAEMON_ADDRESS_ENV)
    os.environ[DAEMON_ADDRESS_ENV] = daemon.address
    logger._logger.addHandler(lines)
    try:
        stack = EmbeddedStack(aws, prefix=prefix, settings_overrides={"watchdog_grace_seconds": 3},
                              checkpoint=seam)
    finally:
        if saved is None:
            os.environ.pop(DAEMON_ADDRESS_ENV, None)
        else:
            os.environ[DAEMON_ADDRESS_ENV] = saved
    stack.clients.ssm.put_parameter(Name="/iac-ci/obs/token", Value=CANARY, Type="SecureString")
    stdout, sys.stdout = sys.stdout, Tee(sys.stdout)
    try:
        with stack:
            code, body = stack.submit(JOB)
            assert code == 202, body
            done = stack.wait(body["run_id"], timeout=90)
            run_id = done["run_id"]
            wait_for(lambda: any(s["annotations"]["leg"] == "orchestrator" and s["end_time"] > done["finished_at"]
                                 for s in daemon.segments(run_id)), what="the last wake-up's segment", timeout=10)
            yield {"stack": stack, "done": done, "run_id": run_id, "daemon": daemon, "lines": lines, "prefix": prefix,
                   "seam": seam, "stdout": sys.stdout.kept.getvalue() if isinstance(sys.stdout, Tee) else "",
                   "orders": stack.store.load(run_id).orders, "events": stack.store.events(run_id)}
        assert not [e for e in stack.pump_errors if not isinstance(e, InjectedCrash)]
    finally:
        sys.stdout = stdout
        logger._logger.removeHandler(lines)
        daemon.close()


def emf_documents(stack: EmbeddedStack, run_id: str) -> list[dict[str, Any]]:
    return [d for d in (json.loads(line) for line in stack.metrics_log.read_text().splitlines())
            if d["run_id"] == run_id]


def measured(docs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [d for d in docs if any(m["Name"] == metric for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"])]


# ---- metrics -----------------------------------------------------------------------------------------
def test_each_order_and_the_run_are_counted_once_with_their_outcome(observed) -> None:
    stack, done, run_id = observed["stack"], observed["done"], observed["run_id"]
    assert done["status"] == "failed"
    docs = emf_documents(stack, run_id)
    finished = measured(docs, "OrdersFinished")
    assert Counter(d["order"] for d in finished) == Counter(JOB_ORDER for JOB_ORDER in done["orders"])  # once each
    assert {d["order"]: d["Outcome"] for d in finished} == {n: o["status"] for n, o in done["orders"].items()}
    assert {d["order"]: d["Outcome"] for d in finished} == {
        "build": "succeeded", "test": "succeeded", "lint": "failed", "deploy": "skipped", "notify": "succeeded"}
    assert {d["order"]: d["Target"] for d in finished} == {
        n: observed["orders"][n].target for n in done["orders"]}
    assert all(d["OrdersFinished"] == [1.0] for d in finished)
    assert Counter(d["order"] for d in measured(docs, "OrdersDispatched")) == Counter(DISPATCHED)
    runs = measured(docs, "RunsFinished")
    assert [(d["Outcome"], d["RunsFinished"], d["job"]) for d in runs] == [("failed", [1.0], "observed")]


def test_timings_are_the_records_own_timestamps(observed) -> None:
    stack, run_id, orders, done = observed["stack"], observed["run_id"], observed["orders"], observed["done"]
    docs = emf_documents(stack, run_id)
    finished = {d["order"]: d for d in measured(docs, "OrdersFinished")}
    for name in DISPATCHED:
        o = orders[name]
        assert finished[name]["OrderDuration"][0] == pytest.approx(o.finished_at - o.started_at, abs=1e-5)
        assert finished[name]["DispatchLatency"][0] == pytest.approx(o.started_at - o.dispatched_at, abs=1e-5)
        assert finished[name]["reported_by"] == "worker"
    assert "OrderDuration" not in finished["deploy"] and "DispatchLatency" not in finished["deploy"]
    waits = {d["order"]: d["QueueWait"][0] for d in measured(docs, "QueueWait")}
    run = stack.store.get_run(run_id)
    assert run is not None and run.packaged_at is not None and run.created_at is not None
    # ready: the end of packaging, or the end of the dependency ("test" after "build")
    assert waits["build"] == pytest.approx(orders["build"].dispatched_at - run.packaged_at, abs=1e-5)
    assert waits["test"] == pytest.approx(orders["test"].dispatched_at - orders["build"].finished_at, abs=1e-5)
    assert all(v >= 0 for d in docs for k, v in d.items() if k in ("QueueWait", "DispatchLatency", "OrderDuration",
                                                                    "RunDuration") for v in v)
    (run_doc,) = measured(docs, "RunDuration")
    assert run_doc["RunDuration"][0] == pytest.approx(done["finished_at"] - run.created_at, abs=1e-5)


def test_documents_are_emf_in_the_stacks_namespace_with_low_cardinality_dimensions(observed) -> None:
    stack, run_id = observed["stack"], observed["run_id"]
    docs = emf_documents(stack, run_id)
    allowed = {"_aws", "service", "Outcome", "Target", "run_id", "trace", "order", "attempt", "reported_by", "job",
               "trigger", "RunsFinished", "RunDuration", "OrdersDispatched", "QueueWait", "DispatchLatency",
               "OrderDuration", "OrdersFinished"}
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == f"IacCi/{observed['prefix']}"
        assert directive["Dimensions"][0] == ["service"] and all(len(d) == 1 for d in directive["Dimensions"])
        assert {d[0] for d in directive["Dimensions"]} <= {"service", "Outcome", "Target"}  # never a run id
        assert set(doc) <= allowed, set(doc) - allowed
        assert doc["service"] == "iac-ci-orchestrator" and isinstance(doc["_aws"]["Timestamp"], int)
    text = stack.metrics_log.read_text()
    assert CANARY not in text and "token=" not in text  # no secret, no log text


def test_emf_goes_beside_the_events_log_never_to_stdout(observed) -> None:
    stack = observed["stack"]
    assert stack.metrics_log == stack.log_dir / "metrics.jsonl" and stack.metrics_log.parent == stack.events_log.parent
    assert emf_documents(stack, observed["run_id"])
    assert "CloudWatchMetrics" not in observed["stdout"] and '"_aws"' not in observed["stdout"]


def test_an_order_behind_a_skipped_one_waits_from_the_skip_not_from_packaging(observed) -> None:
    """``a`` fails after 4 s, ``b`` (after ``a``) is skipped, ``c`` (after ``b``, ``run_if: always``)
    runs: it was ready when ``b`` was skipped, so its queue wait is the engine's, not ``a``'s 4 s."""
    stack = observed["stack"]
    job = {"username": "tester", "name": "skipped-dependency", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["sleep 4", "exit 1"]},
        {"name": "b", "target": "lambda", "depends_on": ["a"], "cmds": ["true"]},
        {"name": "c", "target": "lambda", "depends_on": ["b"], "run_if": "always", "cmds": ["true"]}]}
    code, body = stack.submit(job)
    assert code == 202, body
    done = stack.wait(body["run_id"], timeout=90)
    run_id = done["run_id"]
    assert {n: o["status"] for n, o in done["orders"].items()} == {"a": "failed", "b": "skipped", "c": "succeeded"}
    docs = wait_for(lambda: (d := emf_documents(stack, run_id)) and measured(d, "RunsFinished") and d,
                    what="the run's metrics", timeout=10)
    orders = stack.store.load(run_id).orders
    assert orders["b"].finished_at is not None  # a skip ends its order
    assert orders["a"].finished_at <= orders["b"].finished_at <= orders["c"].dispatched_at
    (c_wait,) = [d["QueueWait"][0] for d in measured(docs, "QueueWait") if d["order"] == "c"]
    assert c_wait == pytest.approx(orders["c"].dispatched_at - orders["b"].finished_at, abs=1e-5)
    assert c_wait < 2.0  # well below a's 4 s: measured from the skip, not from the end of packaging


def test_the_documents_of_one_write_leave_the_wake_up_in_one_call(observed) -> None:
    """Three roots start in one write: their three documents go to the writer together (one flush
    of stdout on Lambda, one open of the file here), not one call each; no document is lost."""
    stack = observed["stack"]
    calls: list[str] = []
    kept = stack.orchestrator.emf
    stack.orchestrator.emf = EmfWriter(calls.append, namespace=kept.namespace)  # read by each wake-up
    try:
        job = {"username": "tester", "name": "one-write", "orders": [
            {"name": n, "target": "lambda", "cmds": ["true"]} for n in ("a", "b", "c")]}
        code, body = stack.submit(job)
        assert code == 202, body
        done = stack.wait(body["run_id"], timeout=90)
        wait_for(lambda: any('"RunsFinished"' in text and done["run_id"] in text for text in calls),
                 what="the run's last document", timeout=10)
    finally:
        stack.orchestrator.emf = kept
    batches = [[json.loads(line) for line in text.splitlines()] for text in calls]
    ours = [batch for batch in batches if batch[0]["run_id"] == done["run_id"]]
    assert all(d["run_id"] == done["run_id"] for batch in ours for d in batch)  # a call is one wake-up's
    started = [sorted(d["order"] for d in batch if "OrdersDispatched" in d) for batch in ours]
    assert ["a", "b", "c"] in started
    assert Counter(next(k for k in ("OrdersDispatched", "OrdersFinished", "RunsFinished") if k in d)
                   for batch in ours for d in batch) == Counter(OrdersDispatched=3, OrdersFinished=3, RunsFinished=1)


# ---- traces ------------------------------------------------------------------------------------------
def test_every_leg_sends_one_segment_to_the_runs_one_trace(observed) -> None:
    run_id, orders, daemon = observed["run_id"], observed["orders"], observed["daemon"]
    run = observed["stack"].store.get_run(run_id)
    run_trace = trace.parse(run.trace_id)
    segments = daemon.segments(run_id)
    assert {s["trace_id"] for s in segments} == {trace.xray_trace_id(run_trace)}
    by_leg = Counter(s["annotations"]["leg"] for s in segments)
    assert (by_leg["intake"], by_leg["packaging"], by_leg["order"]) == (1, 1, len(DISPATCHED))
    assert by_leg["orchestrator"] >= 1 and set(by_leg) == {"intake", "packaging", "orchestrator", "order"}
    assert len({s["id"] for s in segments}) == len(segments)
    assert len({s["annotations"]["leg_trace"] for s in segments}) == len(segments)  # a trace per leg
    (root,) = [s for s in segments if s["annotations"]["leg"] == "intake"]
    assert root["id"] == run_trace.segment_id and "parent_id" not in root
    assert root["annotations"]["leg_trace"] == run.trace_id
    assert all(s["parent_id"] == root["id"] for s in segments if s is not root)
    names = {s["annotations"]["leg"]: s["name"] for s in segments}
    assert names == {"intake": "iac-ci-intake", "packaging": "iac-ci-packaging",
                     "orchestrator": "iac-ci-orchestrator", "order": "iac-ci-order"}
    order_segments = {s["annotations"]["order"]: s for s in segments if s["annotations"]["leg"] == "order"}
    assert set(order_segments) == DISPATCHED
    for name, seg in order_segments.items():
        o = orders[name]
        assert seg["annotations"]["leg_trace"] == o.trace and seg["annotations"]["outcome"] == o.status.value
        assert (seg["start_time"], seg["end_time"]) == pytest.approx((o.started_at, o.finished_at))
        assert seg["metadata"]["iac_ci"]["dispatch_ref"] == o.dispatch_ref
    raw = b"".join(daemon.raw).decode()
    assert CANARY not in raw and "token=" not in raw


def test_each_order_sees_its_own_legs_trace(observed) -> None:
    orders, done = observed["orders"], observed["done"]
    for name in ("build", "test"):
        assert f"leg={orders[name].trace}" in done["orders"][name]["log_tail"]
        assert trace.parse(orders[name].trace).run_id == observed["run_id"]
    assert len({o.trace for o in orders.values()}) == len(orders)


def printed_traces(observed) -> dict[str, str]:
    """The ``IAC_CI_TRACE_ID`` each tracing order's command printed (``echo "leg=..."``)."""
    shape = r"leg=([A-Za-z0-9_-]+:\d+(?:\.\d+)?)\b"  # the value, not the echoed command
    found = {n: re.search(shape, observed["done"]["orders"][n]["log_tail"]) for n in ("build", "test")}
    assert all(found.values()), found
    return {n: m.group(1) for n, m in found.items() if m is not None}


def test_order_state_change_events_carry_the_orders_own_trace(observed) -> None:
    printed, orders = printed_traces(observed), observed["orders"]
    events = observed["stack"].wait_events(observed["run_id"])  # events.jsonl, as a rule delivered them
    changes = [e["detail"] for e in events if e["detail-type"] == ORDER_STATE_CHANGE]
    assert {d["order"] for d in changes} == set(orders)
    for name, seen in printed.items():
        assert {d["trace"] for d in changes if d["order"] == name} == {seen}  # queued -> running -> succeeded
    assert all(d["trace"] == orders[d["order"]].trace for d in changes)


def test_order_event_items_carry_the_orders_trace_beside_the_writers(observed) -> None:
    printed, orders = printed_traces(observed), observed["orders"]
    items = [e for e in observed["events"] if e["event_type"].startswith("order_")]
    assert {e["order_name"] for e in items} == set(orders)
    for name, seen in printed.items():
        assert {e.get("order_trace") for e in items if e["order_name"] == name} == {seen}
    assert all(e.get("order_trace") == orders[e["order_name"]].trace != e["trace"] for e in items)
    assert not [e for e in observed["events"] if e["event_type"].startswith("job_") and "order_trace" in e]


def test_events_and_log_lines_carry_the_trace_of_the_leg_that_wrote_them(observed) -> None:
    segments = observed["daemon"].segments(observed["run_id"])
    legs = {s["annotations"]["leg_trace"]: s["annotations"]["leg"] for s in segments}
    events = observed["events"]
    assert all(legs.get(e.get("trace")) in ("packaging", "orchestrator") for e in events), \
        [(e["event_type"], e.get("trace")) for e in events]
    (started,) = [e for e in events if e["event_type"] == "job_started"]
    assert legs[started["trace"]] == "packaging"
    assert {legs[e["trace"]] for e in events if e["event_type"].startswith("order_")} == {"orchestrator"}
    wake_lines = [line for line in observed["lines"].lines()
                  if line.get("message") == "checkpoint" and line.get("run_id") == observed["run_id"]]
    assert wake_lines and all(legs.get(line.get("trace")) == "orchestrator" for line in wake_lines)
    assert {line["point"] for line in wake_lines} >= {"locked", "state_written", "dispatched", "finalized"}


# ---- exactly once ------------------------------------------------------------------------------------
def test_a_wake_up_that_fails_after_writing_and_is_retried_counts_nothing_twice(observed) -> None:
    """The 2nd write of states (build's result) crashes the wake-up: its message comes back and the
    next wake-up carries on; what the crashed one wrote was counted by it, and only by it."""
    stack, crash = observed["stack"], CrashAt("state_written", nth=2)
    observed["seam"].crash = crash  # (the first run is final: its late wake-ups write nothing)
    job = {"username": "tester", "name": "retried", "orders": [
        {"name": "build", "target": "lambda", "cmds": ["true"]},
        {"name": "ship", "target": "lambda", "depends_on": ["build"], "cmds": ["true"]}]}
    try:
        code, body = stack.submit(job)
        assert code == 202, body
        done = stack.wait(body["run_id"], timeout=90)
    finally:
        observed["seam"].crash = None
    assert crash.crashed["state_written"] == 1 and done["status"] == "succeeded"
    # written right after the finalize that won, a moment after the done object
    docs = wait_for(lambda: (d := emf_documents(stack, done["run_id"])) and measured(d, "RunsFinished") and d,
                    what="the last wake-up's metrics", timeout=10)
    assert Counter(d["order"] for d in measured(docs, "OrdersFinished")) == Counter({"build": 1, "ship": 1})
    assert Counter(d["order"] for d in measured(docs, "OrdersDispatched")) == Counter({"build": 1, "ship": 1})
    assert len(measured(docs, "RunsFinished")) == 1
