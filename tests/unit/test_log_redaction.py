"""Credentials a tool prints (token shapes, ``user:password@`` in URLs) are redacted by the worker as it
writes each line (``worker.log``), so every copy of the log is clean: the file uploaded as the final
log, the live snapshot, the worker's own stream (CloudWatch, the CodeBuild console) and the tail kept
for the result. Real files and the real output reader (``worker.process.pump``); nothing is mocked.

Through the route and the API, with a running order: ``tests/embedded/test_logs_cli.py``."""

from __future__ import annotations

import io
from pathlib import Path

from lambda_runtime.masking import Masker
from lambda_runtime.worker.log import LINE_CAP_BYTES, NOTE_PREFIX, OrderLog, mask_cut_credential
from lambda_runtime.worker.process import pump

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


def test_only_the_end_of_a_cut_line_is_masked() -> None:
    assert mask_cut_credential("see https://example.com/docs then ghp_abc") == "see https://example.com/docs then ***"
    assert mask_cut_credential("see https://deployer:hunt") == "see ***"
    assert mask_cut_credential("a plain end") == "a plain end"
    long_line = "z" * 100_000 + " ghp_abc"  # only the end is searched, however long the line
    assert mask_cut_credential(long_line) == "z" * 100_000 + " ***"
