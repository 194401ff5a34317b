"""The intake handlers behind a local HTTP server: API Gateway, on loopback.

Each request becomes the API Gateway proxy event the deployed API would send, and goes to
the same ``Api`` object the Lambda function runs, so a client (``iac-ci submit``, a GitHub
webhook) cannot tell this endpoint from a deployed stack's.

With an ``ssl_context`` (``server_context``) it serves HTTPS; with a client CA, mutual TLS as an
API Gateway custom domain does it: a client without a certificate that chains to the CA bundle, or
with an expired one, is refused in the handshake, and the verified certificate reaches the intake
function as ``requestContext.identity.clientCert`` (``apigw.client_cert_context``), where the
revocation check runs (``lambda_runtime.intake.client_certs``). Each handshake happens in its
connection's own thread, so a client that stalls in it holds up no one else.
"""
from __future__ import annotations

import base64
import collections
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from iac_ci.embedded.apigw import client_cert_context, proxy_event
from lambda_runtime.logs import logger

MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
HANDSHAKE_TIMEOUT_SECONDS = 10


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+ with ``cert``/``key``; with ``client_ca`` (a truststore bundle: root and intermediates),
    every client must present a certificate that chains to it (``CERT_REQUIRED``). Only that bundle is
    trusted for clients, never the system's CAs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.refused: collections.deque[str] = collections.deque(maxlen=100)  # the latest refused handshakes

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A refused handshake (or a client gone mid-request) is the client's business: one log line
        saying why, no traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError):
            reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or str(error)
            self.refused.append(str(reason))
            logger.info("TLS handshake refused", extra={"client": str(client_address[0]), "reason": str(reason)})
            return
        if isinstance(error, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class HttpApi:
    """``api`` may be None at first and ``attach``-ed later: the socket is bound here, so ``url`` is
    known before the stack that serves it is built (the stack's links need its own URL)."""

    def __init__(self, api: Any | None, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None):
        self._api = api
        self._server = _Server((host, port), self._handler_class())
        self._tls = ssl_context is not None
        if ssl_context is not None:  # the handshake runs in the connection's thread (``Handler.setup``)
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True,
                                                          do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    @property
    def refused_handshakes(self) -> list[str]:
        """Why the latest TLS handshakes were refused (``certificate has expired``, ...), oldest first."""
        return list(self._server.refused)

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

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
                    self.request.do_handshake()  # refused: ssl.SSLError, quietly dropped (_Server.handle_error)
                    self.request.settimeout(None)
                super().setup()

            def _client_cert(self) -> dict[str, Any] | None:
                """The certificate the handshake verified (only asked for, and so only present, with a
                client CA)."""
                if not isinstance(self.connection, ssl.SSLSocket):
                    return None
                der = self.connection.getpeercert(binary_form=True)
                return client_cert_context(der) if der else None

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
                                    dict(pairs) or None, multi_query=_multi(pairs) or None,
                                    client_cert=self._client_cert())
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
