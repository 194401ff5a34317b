"""The live log on its own (``worker.live``, ``worker.log``): what it uploads, when, how much, and that it
is always a prefix of the final log. Real files, a real HTTP server on 127.0.0.1 for the presigned PUT,
an injected clock for the timing; nothing of ours is mocked.

The whole path (an order's live log read through the API while it runs) is in
``tests/embedded/test_logs_cli.py``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.waiting import wait_for

from lambda_runtime.masking import Masker
from lambda_runtime.worker.errors import TransferError
from lambda_runtime.worker.live import LivePolicy, LivePublisher
from lambda_runtime.worker.log import NOTE_PREFIX, OrderLog

SECRET = "tok-" + "Qm29xLw7"


def _log(cap: int | None = None) -> OrderLog:
    return OrderLog(None, None, Masker([SECRET]), live_cap_bytes=cap)


def _final(log: OrderLog) -> bytes:
    body = log.upload_body()
    return body if isinstance(body, bytes) else body.read_bytes()


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Puts:
    """What a publisher PUT, and a way to make the next ones fail."""

    bodies: list[bytes] = field(default_factory=list)
    fail: int = 0

    def __call__(self, data: bytes) -> None:
        if self.fail:
            self.fail -= 1
            raise TransferError("HTTP 503 Slow Down", status=503)
        self.bodies.append(data)


# ---- the log's live snapshot ----------------------------------------------------------------------


def test_a_snapshot_is_the_masked_log_so_far_ending_at_a_line_end() -> None:
    log = _log()
    log.line(f"login with {SECRET}")
    log.note("step two")
    snapshot = log.live_snapshot()
    assert snapshot is not None
    data, stopped = snapshot
    assert data == f"login with ***\n{NOTE_PREFIX}step two\n".encode() and not stopped
    assert log.size == len(data)
    log.line("after")
    assert _final(log).startswith(data)
    log.close()
    assert log.live_snapshot() is None


def test_the_cap_stops_the_live_log_with_a_note_that_the_final_log_keeps_at_the_same_place() -> None:
    log = _log(cap=100)
    for i in range(20):
        log.line(f"line {i:02d} " + "x" * 20)
    data, stopped = log.live_snapshot() or (b"", False)
    assert stopped
    text = data.decode()
    assert text.endswith(f"{NOTE_PREFIX}the live log stops here, at 100 bytes; "
                         "the whole log is uploaded when the order ends\n")
    assert text.count("the live log stops here") == 1 and "line 03" in text and "line 04" not in text
    final = _final(log)
    assert final.startswith(data) and b"line 19" in final  # the offset a follower reached stays valid
    assert log.live_snapshot() == (data, True)  # it no longer grows
    log.close()


def test_without_a_live_log_there_is_no_cap_note() -> None:
    log = _log(cap=None)
    for i in range(50):
        log.line(f"line {i} " + "y" * 40)
    assert b"live log" not in _final(log)
    log.close()


# ---- when it uploads -------------------------------------------------------------------------------


def test_the_wait_after_an_upload_grows_with_it_so_the_upload_rate_is_bounded() -> None:
    policy = LivePolicy(min_interval_seconds=2, bytes_per_second=1000)
    assert policy.interval(10) == 2 and policy.interval(2000) == 2 and policy.interval(10_000) == 10
    for size in (1, 500, 5000, 10**6):
        assert size / policy.interval(size) <= policy.bytes_per_second  # never more than the rate, on average
    assert not policy.due(now=100, size=5, last_size=5, last_at=0)  # unchanged: nothing to upload
    assert policy.due(now=100, size=6, last_size=5, last_at=98)
    assert not policy.due(now=100, size=6, last_size=5, last_at=98.5)
    # the wait is for what was uploaded, not for what the log has grown to: a fast log still gets its turn
    assert policy.due(now=110, size=10**9, last_size=10_000, last_at=100)
    assert not policy.due(now=109, size=10**9, last_size=10_000, last_at=100)


def test_the_first_line_goes_up_after_half_a_second_then_at_most_every_interval_and_only_when_changed() -> None:
    log, clock, puts = _log(), Clock(), Puts()
    publisher = LivePublisher(log, puts, policy=LivePolicy(min_interval_seconds=2), clock=clock)
    assert not publisher.step()  # nothing written yet
    log.line("first")
    clock.now += 0.4
    assert not publisher.step() and not puts.bodies  # an order over within its first half second uploads none
    clock.now += 0.1
    assert publisher.step() and puts.bodies == [b"first\n"]
    log.line("second")
    clock.now += 1
    assert not publisher.step()  # within the interval
    clock.now += 1
    assert publisher.step() and puts.bodies[-1] == b"first\nsecond\n"
    clock.now += 10
    assert not publisher.step()  # unchanged
    log.line("third")
    puts.fail = 1
    assert not publisher.step()  # the upload failed: the order goes on, the next due upload retries
    clock.now += 2
    assert publisher.step() and puts.bodies[-1] == b"first\nsecond\nthird\n"
    final = _final(log)
    assert all(final.startswith(body) for body in puts.bodies)
    assert publisher.uploads == 3 and publisher.uploaded_bytes == sum(map(len, puts.bodies))
    log.close()


def test_the_upload_budget_ends_the_live_log_with_a_note() -> None:
    log, clock, puts = _log(cap=10**6), Clock(), Puts()
    publisher = LivePublisher(log, puts, clock=clock, policy=LivePolicy(min_interval_seconds=1, budget_bytes=300))
    for i in range(20):
        log.line(f"line {i:02d} " + "z" * 30)
        clock.now += 1
        publisher.step()
    assert publisher.uploaded_bytes <= 300 + len(puts.bodies[-1])  # the budget, plus the last (noted) copy
    assert puts.bodies[-1].endswith(b"the live log stops here, having uploaded 300 bytes; "
                                    b"the whole log is uploaded when the order ends\n")
    count = len(puts.bodies)
    log.line("later")
    clock.now += 100
    assert not publisher.step() and len(puts.bodies) == count  # it stopped for good
    assert _final(log).startswith(puts.bodies[-1]) and _final(log).endswith(b"later\n")
    log.close()


# ---- the PUT itself ---------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    content_type: str
    body: bytes


@pytest.fixture()
def bucket() -> Iterator[tuple[str, list[Received], list[int]]]:
    """A real HTTP server standing in for S3's presigned PUT; ``statuses`` scripts its next answers."""
    received: list[Received] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(Received(self.command, self.headers.get("Content-Type", ""), data))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/internal/runs/r/orders/o/live/log.txt?X-Amz-Signature=x", \
        received, statuses
    server.shutdown()
    server.server_close()


def test_a_publisher_puts_the_live_log_to_its_url_once_per_upload(bucket) -> None:
    url, received, statuses = bucket
    log = _log()
    publisher = LivePublisher.to_url(log, url, policy=LivePolicy(first_after_seconds=0))
    log.line("hello")
    statuses.append(503)
    assert not publisher.step()  # one attempt: a 503 waits for the next due upload, no retry loop
    assert len(received) == 1
    log.line("world")
    publisher._last_at -= 10  # noqa: SLF001 - as if the interval had passed
    assert publisher.step()
    assert [(r.method, r.content_type, r.body) for r in received] == [
        ("PUT", "text/plain; charset=utf-8", b"hello\n"), ("PUT", "text/plain; charset=utf-8", b"hello\nworld\n")]
    log.close()


def test_a_started_publisher_uploads_on_its_own_and_stop_ends_it(bucket) -> None:
    url, received, _ = bucket
    log = _log()
    publisher = LivePublisher.to_url(log, url, policy=LivePolicy(poll_seconds=0.01, min_interval_seconds=0.01,
                                                                 first_after_seconds=0))
    publisher.start()
    log.line("streamed")
    try:
        wait_for(lambda: received, timeout=10, poll=0.01, what="the first live upload")
    finally:
        publisher.stop()
    assert received[-1].body == b"streamed\n"
    assert not publisher.running  # no upload can follow: the final log takes over
    log.close()
