"""``ApiClient`` when the connection breaks after the request went out: a real server on loopback that
reads each request and then closes the connection without an answer, as a load balancer that drops a
connection, a deploy that restarts the API, or a read timeout would. The API may have acted on such a
request, so only a read, or a request it recognises when sent again (``Idempotency-Key``), is retried;
anything else fails at once with ``Unreachable``, never with a traceback of urllib's own."""
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from iac_ci.remote.client import ApiClient, StackError, Unreachable


class Flaky(http.server.BaseHTTPRequestHandler):
    """Drops the connection for the first ``drops`` requests it reads, then answers ``{"ok": true}``."""

    drops = 0
    seen: list[tuple[str, str, str | None]] = []

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
        if len(type(self).seen) <= type(self).drops:
            self.close_connection = True
            self.connection.close()  # no status line: http.client raises RemoteDisconnected
            return
        body = json.dumps({"ok": True, "run_id": "r1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Flaky]]]:
    handler = type("Handler", (Flaky,), {"drops": 0, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def client(url: str) -> ApiClient:
    return ApiClient(url, "s3cret", sleep=lambda _: None, attempts=4, timeout=5)


def test_a_read_is_retried_through_a_dropped_connection(server) -> None:
    url, handler = server
    handler.drops = 2
    assert client(url).status("r1") == (200, {"ok": True, "run_id": "r1"})
    assert [m for m, _, _ in handler.seen] == ["GET"] * 3


def test_a_submission_is_retried_with_the_same_idempotency_key(server) -> None:
    url, handler = server
    handler.drops = 1
    code, _ = client(url).submit(b'{"name": "x"}')
    assert code == 200
    keys = [key for _, _, key in handler.seen]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]  # the API recognises the second as the first


def test_a_cancel_is_not_sent_twice_when_the_connection_breaks(server) -> None:
    url, handler = server
    handler.drops = 1
    with pytest.raises(Unreachable, match=r"cannot reach http://127\.0\.0\.1:\d+: the connection broke"):
        client(url).cancel("r1")
    assert handler.seen == [("POST", "/runs/r1/cancel", None)]


def test_a_read_that_never_gets_an_answer_ends_in_unreachable(server) -> None:
    url, handler = server
    handler.drops = 99
    with pytest.raises(Unreachable) as info:
        client(url).status("r1")
    assert isinstance(info.value, StackError)  # every command reports it as it reports a refused connection
    assert len(handler.seen) == 4
