"""Credentials a tool prints (token shapes, ``user:password@`` in URLs) are redacted by the worker as it
writes each line (``worker.log``), so every copy of the log is clean: the file uploaded as the final
log, the live snapshot, the worker's own stream (CloudWatch, the CodeBuild console) and the tail kept
for the result; the worker's note of a failed order too. Real files, the real output reader
(``worker.process.pump``) and the real worker (``execute_order``) against a real HTTP server standing in
for its presigned URLs; nothing is mocked.

Through the route and the API, with a running order: ``tests/embedded/test_logs_cli.py``."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lambda_runtime.masking import Masker
from lambda_runtime.schema.contract import Manifest, WorkerPayload
from lambda_runtime.worker.log import LINE_CAP_BYTES, NOTE_PREFIX, OrderLog
from lambda_runtime.worker.process import pump
from lambda_runtime.worker.runner import execute_order

TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
PASSWORD = "hunter22secret"
URL = f"https://deployer:{PASSWORD}@git.example.com/acme/infra.git"
OWN = "own-s3cr3t-value"  # the order's own secret: masked by the Masker, as before


def copies(log: OrderLog, stream: io.StringIO) -> dict[str, str]:
    """Every place the log's text went: the file, the live snapshot, the stream and the tail."""
    snapshot = log.live_snapshot()
    assert snapshot is not None
    body = log.upload_body()
    final = body if isinstance(body, bytes) else body.read_bytes()
    return {"final": final.decode(), "live": snapshot[0].decode(), "stream": stream.getvalue(), "tail": log.tail}


def test_every_copy_of_the_log_holds_the_credentials_redacted(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = OrderLog(tmp_path / "log.txt", stream, Masker([OWN]), live_cap_bytes=1024 * 1024)
    log.line(f"using token {TOKEN} and {OWN}")
    log.line(f"cloning {URL}")
    log.note(f"git said: fatal: could not read from {URL}")
    for where, text in copies(log, stream).items():
        assert TOKEN not in text and TOKEN[1:] not in text and PASSWORD not in text and OWN not in text, where
        assert "using token *** and ***\n" in text, where
        assert "cloning https://***@git.example.com/acme/infra.git\n" in text, where
        assert f"{NOTE_PREFIX}git said: fatal: could not read from https://***@git.example.com/" in text, where
    log.close()


def test_a_secret_is_masked_whole_before_credentials_are_redacted() -> None:
    """Redacting first would replace the token inside the secret and leave the rest of it unmatched."""
    secret = f"key-id-4711 {TOKEN}"
    stream = io.StringIO()
    log = OrderLog(None, stream, Masker([secret]))
    log.line(f"the deploy key is {secret}")
    assert stream.getvalue() == "the deploy key is ***\n"
    log.close()


def test_a_line_cut_at_the_cap_inside_a_credential_keeps_no_part_of_it() -> None:
    """The reader cuts an endless line at ``LINE_CAP_BYTES``; a credential the cut goes through has lost
    the shape that redaction knows (a URL without its ``@``, a token shorter than 20 characters)."""
    filler = "x" * (LINE_CAP_BYTES - len("cloning https://deployer:hunter22"))
    endless_url = f"{filler} cloning {URL} and more\n".encode()
    filler = "y" * (LINE_CAP_BYTES - len(" token ghp_a1B2c3D4"))
    endless_token = f"{filler} token {TOKEN} and more\n".encode()
    stream = io.StringIO()
    log = OrderLog(None, stream, Masker([]))
    pump(io.BytesIO(endless_url + endless_token + b"next line\n"), log)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[2] == "next line"
    assert lines[0].endswith(f" cloning *** {NOTE_PREFIX}line truncated at {LINE_CAP_BYTES} bytes")
    assert lines[1].endswith(f" token *** {NOTE_PREFIX}line truncated at {LINE_CAP_BYTES} bytes")
    assert "deployer" not in lines[0] and "hunter" not in lines[0] and "ghp_" not in lines[1]
    log.close()


# ---- the worker's note of a failed order ---------------------------------------------------------


class ObjectStore:
    """A real HTTP server on 127.0.0.1 standing in for the presigned URLs: GET answers ``objects``,
    PUT stores into it, by path."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = store.objects.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def do_PUT(self) -> None:
                store.objects[self.path.split("?")[0]] = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def store() -> Iterator[ObjectStore]:
    server = ObjectStore()
    yield server
    server.close()


def bundle(manifest: Manifest) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("manifest.json", manifest.model_dump_json().encode()), ("code/README", b"hello\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_note_of_a_failed_order_masks_its_error_before_redacting_it(store: ObjectStore, tmp_path: Path) -> None:
    """The error names a capability URL that holds a token shape, and a credential URL. Masked first,
    the capability goes whole; redacted first, its token would go and the rest of it, the signature
    included, would no longer match the mask."""
    log_url = f"{store.url}/log/{TOKEN}?X-Amz-Signature=c4p4b1l1ty"
    payload = WorkerPayload(
        run_id="r1",
        order="o",
        trace_id="t",
        timeout=60,
        bundle_url=f"{store.url}/bundle",
        log_url=log_url,
        result_url=f"{store.url}/result",
    )
    store.objects["/bundle"] = bundle(
        Manifest(
            run_id="r1",
            order="o",
            trace_id="t",
            flow_id="f",
            cmds=["true"],
            timeout=60,
            target="lambda",
            dir=f"../{log_url} {URL}",
        )
    )
    stream = io.StringIO()
    run = execute_order(payload, log_stream=stream, workdir_parent=str(tmp_path))
    assert run.reported and run.result.status == "failed"
    note = f"{NOTE_PREFIX}order failed: the order's dir '../*** https://***@git.example.com/acme/infra.git' leaves"
    for where, text in (
        ("stream", stream.getvalue()),
        ("final", store.objects[f"/log/{TOKEN}"].decode()),
        ("tail", run.result.log_tail),
    ):
        assert note in text, (where, text)
        assert "c4p4b1l1ty" not in text and TOKEN[1:] not in text and PASSWORD not in text, where
    # the result's error, which the engine stores and PR comments show, is masked before it is redacted too
    error = run.result.error or ""
    assert "the order's dir '../*** https://***@git.example.com/acme/infra.git' leaves" in error, error
    assert "c4p4b1l1ty" not in error and TOKEN[1:] not in error and PASSWORD not in error, error
