"""The intake handlers behind a local HTTP server: API Gateway, on loopback.

Each request becomes the API Gateway proxy event the deployed API would send, and goes to
the same ``Api`` object the Lambda function runs, so a client (``iac-ci submit``, a GitHub
webhook) cannot tell this endpoint from a deployed stack's.
"""
from __future__ import annotations

import base64
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from iac_ci.embedded.apigw import proxy_event

MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


class HttpApi:
    """``api`` may be None at first and ``attach``-ed later: the socket is bound here, so ``url`` is
    known before the stack that serves it is built (the stack's links need its own URL)."""

    def __init__(self, api: Any | None, *, host: str = "127.0.0.1", port: int = 0):
        self._api = api
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def attach(self, api: Any) -> HttpApi:
        self._api = api
        return self

    def start(self) -> HttpApi:
        if self._api is None:
            raise RuntimeError("HttpApi.start: no api attached")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REQUEST_BYTES:
                    self._reply(413, {"Content-Type": "application/json"}, b'{"error": "request too large"}')
                    return
                body = self.rfile.read(length) if length else None
                path, _, query = self.path.partition("?")
                # decoded, as API Gateway decodes them; a repeated parameter keeps every value
                pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
                event = proxy_event(self.command, path, body, dict(self.headers.items()),
                                    dict(pairs) or None, multi_query=_multi(pairs) or None)
                api = outer._api
                assert api is not None  # start() refuses to serve without one
                resp = api.handle(event, None)
                raw = resp.get("body") or ""
                data = base64.b64decode(raw) if resp.get("isBase64Encoded") else raw.encode()
                headers = dict(resp.get("headers") or {})
                for k, values in (resp.get("multiValueHeaders") or {}).items():
                    headers.setdefault(k, values[-1])
                self._reply(int(resp["statusCode"]), headers, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet, like API Gateway
                return None

        return Handler


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out
