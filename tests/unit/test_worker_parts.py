"""The worker's building blocks on their own, against real parts: real tar files in tmp dirs, a
real HTTP server on 127.0.0.1, real bash processes and process groups. Nothing of ours is mocked.

``test_worker.py`` drives the whole worker end to end; these tests pin the guarantees each
module gives, including the ones no end-to-end scenario reaches (a hostile input archive, a
flaky object store, a worker interrupted mid-order)."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from json import loads as json_loads
from pathlib import Path
from types import FrameType

import pytest
from support.processes import live_group_members

from lambda_runtime.masking import MASK, Masker
from lambda_runtime.schema.contract import LOG_TAIL_CHARS
from lambda_runtime.worker import sandbox
from lambda_runtime.worker.archive import (
    extract_under,
    outermost,
    pack_artifacts,
    rebased,
    relative_path,
    safe_extract,
    unpack_bundle,
)
from lambda_runtime.worker.errors import OrderFailure, TransferError
from lambda_runtime.worker.log import LINE_CAP_BYTES, NOTE_PREFIX, OrderLog
from lambda_runtime.worker.process import pump, run_script, signal_group, terminate_group, wait_exit
from lambda_runtime.worker.transfer import HTTP_RETRY_DELAYS, http_get, http_put

pytestmark = pytest.mark.timeout(60)

SECRET = "hunter2-" + "Zq81xPw"


# ---- helpers -----------------------------------------------------------------------------------


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _targz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        safe_extract(tar, tar.getmembers(), dest, what="the test archive")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _new_log(tmp_path: Path, stream: io.StringIO | None = None, secrets: list[str] | None = None) -> OrderLog:
    log = OrderLog(tmp_path / "log.txt", stream, Masker())
    if secrets:
        log.add_secrets(secrets, [])
    return log


def _log_text(log: OrderLog) -> str:
    log.close()
    return log.path.read_text(encoding="utf-8")


@pytest.fixture()
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


# ---- archive: unpacking hostile archives -------------------------------------------------------


def test_member_with_dotdot_is_refused_before_anything_is_unpacked(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "a.tar.gz", [_file("ok.txt"), _file("sub/../../evil.txt")])
    with pytest.raises(OrderFailure, match=r"refused to unpack the test archive: member .* contains '\.\.'"):
        _extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert _tree(dest) == set()  # checked up front: not even the harmless member landed


def test_dotdot_that_stays_inside_is_refused_too(tmp_path: Path, dest: Path) -> None:
    """tarfile's "data" filter would allow ``a/../b``; nothing legitimate needs it, so it is refused."""
    archive = _targz(tmp_path / "a.tar.gz", [_file("a/../b.txt")])
    with pytest.raises(OrderFailure, match="contains '..'"):
        _extract(archive, dest)
    assert _tree(dest) == set()


def test_absolute_member_lands_inside_the_destination(tmp_path: Path, dest: Path) -> None:
    """An absolute name is not refused but re-rooted under the destination: it can never be
    written at the absolute place it names."""
    target = tmp_path / "outside" / "abs.txt"
    archive = _targz(tmp_path / "a.tar.gz", [_file(str(target), b"payload")])
    _extract(archive, dest)
    assert not target.exists()
    assert (dest / str(target).lstrip("/")).read_bytes() == b"payload"


@pytest.mark.parametrize("target", ["/etc", "../outside", "sub/../../outside"], ids=["absolute", "up", "nested-up"])
def test_symlink_leaving_the_destination_is_refused(tmp_path: Path, dest: Path, target: str) -> None:
    (tmp_path / "outside").mkdir()
    archive = _targz(tmp_path / "a.tar.gz", [_link("escape", target)])
    with pytest.raises(OrderFailure, match="refused to unpack the test archive"):
        _extract(archive, dest)
    assert not os.path.lexists(dest / "escape")


def test_writing_through_an_escaping_symlink_is_impossible(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = _targz(tmp_path / "a.tar.gz", [_link("door", "../outside"), _file("door/planted.txt")])
    with pytest.raises(OrderFailure, match="refused to unpack"):
        _extract(archive, dest)
    assert list(outside.iterdir()) == []


def test_symlink_staying_inside_is_kept(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "a.tar.gz", [_file("b.txt", b"inside"), _link("a/link", "../b.txt")])
    _extract(archive, dest)
    assert (dest / "a" / "link").is_symlink() and (dest / "a" / "link").read_bytes() == b"inside"


def test_hard_link_with_dotdot_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "a.tar.gz", [_file("b.txt"), _link("h", "x/../../b.txt", hard=True)])
    with pytest.raises(OrderFailure, match="member 'h' contains '..'"):
        _extract(archive, dest)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE], ids=["chr", "blk", "fifo"])
def test_device_files_are_refused(tmp_path: Path, dest: Path, kind: bytes) -> None:
    archive = _targz(tmp_path / "a.tar.gz", [_special("dev", kind)])
    with pytest.raises(OrderFailure, match="refused to unpack"):
        _extract(archive, dest)
    assert not os.path.lexists(dest / "dev")


def test_rebased_renames_under_the_prefix_and_drops_the_rest(tmp_path: Path) -> None:
    archive = _targz(tmp_path / "a.tar.gz", [_file("./code/a.txt"), _file("code/sub/b.txt"), _file("codex/c.txt"),
                                             _file("top.txt"), _link("code/h", "code/a.txt", hard=True)])
    with tarfile.open(archive, "r:gz") as tar:
        out = rebased(tar.getmembers(), "code")
    assert [(m.name, m.linkname) for m in out] == [("a.txt", ""), ("sub/b.txt", ""), ("h", "a.txt")]


def test_rebased_refuses_a_hard_link_to_a_member_outside_the_prefix(tmp_path: Path) -> None:
    archive = _targz(tmp_path / "a.tar.gz", [_file("secrets.sops.json"), _link("code/s", "secrets.sops.json",
                                                                               hard=True)])
    with tarfile.open(archive, "r:gz") as tar, pytest.raises(OrderFailure, match="hard link code/s points outside"):
        rebased(tar.getmembers(), "code")


def test_unpack_bundle_returns_manifest_and_secrets_and_unpacks_only_code(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "b.tar.gz", [_file("manifest.json", b"{}"), _file("./secrets.sops.json", b"enc"),
                                             _file("code/main.tf", b"tf"), _file("other/x.txt")])
    assert unpack_bundle(archive, dest) == (b"{}", b"enc")
    assert _tree(dest) == {"main.tf"}


def test_unpack_bundle_without_optional_members(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "b.tar.gz", [_file("code/README")])
    assert unpack_bundle(archive, dest) == (None, None)
    assert _tree(dest) == {"README"}


def test_unpack_bundle_refuses_a_manifest_that_is_not_a_regular_file(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "b.tar.gz", [_link("manifest.json", "/etc/passwd"), _file("code/README")])
    with pytest.raises(OrderFailure, match="manifest.json in the order's bundle is not a regular file"):
        unpack_bundle(archive, dest)


def test_extract_under_takes_only_the_requested_path(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "i.tar.gz", [_file("./dist/app.txt"), _file("dist/sub/x.txt"),
                                             _file("distribution/y.txt"), _file("other.txt")])
    assert extract_under(archive, "dist", dest, what="the input") is True
    assert _tree(dest) == {"dist", "dist/app.txt", "dist/sub", "dist/sub/x.txt"}
    assert extract_under(archive, "reports", dest / "none", what="the input") is False
    assert not (dest / "none").exists()


def test_extract_under_still_applies_the_safety_rules(tmp_path: Path, dest: Path) -> None:
    archive = _targz(tmp_path / "i.tar.gz", [_link("dist/up", "../../outside")])
    with pytest.raises(OrderFailure, match="refused to unpack the input"):
        extract_under(archive, "dist", dest, what="the input")


# ---- archive: paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", "  ", ".", "./", "..", "../x", "a/../../x", "/etc/passwd"])
def test_relative_path_refuses_anything_outside_the_working_directory(raw: str) -> None:
    with pytest.raises(OrderFailure, match=r"artifact path .* must name something inside the working directory"):
        relative_path(raw, "artifact path")


@pytest.mark.parametrize(("raw", "expected"), [("dist", "dist"), ("./dist/", "dist"), (" a/../b ", "b"),
                                               ("a//b/./c", "a/b/c")])
def test_relative_path_normalizes(raw: str, expected: str) -> None:
    assert relative_path(raw, "input path") == expected


def test_outermost_keeps_each_tree_once_and_respects_name_boundaries() -> None:
    kept = outermost(["dist/app.txt", "dist", "distribution", "dist", "dist/sub/x", "reports/plan.txt"])
    assert sorted(kept) == ["dist", "distribution", "reports/plan.txt"]


# ---- archive: packing artifacts ----------------------------------------------------------------


def test_pack_artifacts_keeps_inner_links_drops_escaping_ones_and_special_files(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    (workdir / "dist" / "sub").mkdir(parents=True)
    (workdir / "dist" / "app.txt").write_text("built\n")
    (workdir / "dist" / "sub" / "x.txt").write_text("deep\n")
    (workdir / "dist" / "ok").symlink_to("app.txt")
    (workdir / "dist" / "up-ok").symlink_to("../dist/app.txt")
    (workdir / "dist" / "etc").symlink_to("/etc")
    (workdir / "dist" / "up").symlink_to("../../..")
    os.mkfifo(workdir / "dist" / "pipe")
    log = _new_log(tmp_path)
    archive = tmp_path / "artifacts.tar.gz"

    pack_artifacts(archive, workdir, ["dist", "dist/app.txt"], log)

    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"dist", "dist/app.txt", "dist/sub", "dist/sub/x.txt", "dist/ok", "dist/up-ok"}
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members.values())
    assert members["dist/ok"].issym() and members["dist/ok"].linkname == "app.txt"  # stored, not followed
    text = _log_text(log)
    assert "artifact link dist/etc points outside the working directory; left out" in text
    assert "artifact link dist/up points outside the working directory; left out" in text
    assert "artifact dist/pipe is not a file, directory or link; left out" in text
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    assert extract_under(archive, "dist", consumer, what="the artifacts")  # the next order accepts it whole
    assert (consumer / "dist" / "up-ok").read_text() == "built\n"


def test_pack_artifacts_refuses_a_path_reached_through_a_symlinked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "link").symlink_to(outside)
    with pytest.raises(OrderFailure, match="artifact 'link/secret.txt' leaves the working directory through a symlink"):
        pack_artifacts(tmp_path / "a.tar.gz", workdir, ["link/secret.txt"], _new_log(tmp_path))


# ---- the order log -----------------------------------------------------------------------------


def test_order_log_masks_every_destination_and_keeps_the_base_values(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = OrderLog(tmp_path / "log.txt", stream, Masker(["https://bucket/result?sig=abc"]))
    log.add_secrets([SECRET], ["https://bucket/result?sig=abc"])
    log.line(f"pw={SECRET}")
    log.line('{"pw": "' + SECRET + '"}')
    log.note("url was https://bucket/result?sig=abc")
    text = _log_text(log)
    for seen in (text, stream.getvalue(), log.tail):
        assert SECRET not in seen and "sig=abc" not in seen
        assert f"pw={MASK}\n" in seen
        assert f"{NOTE_PREFIX}url was {MASK}\n" in seen
    assert text == stream.getvalue() == log.tail
    assert log.mask(f"x {SECRET} y") == f"x {MASK} y"


def test_truncated_line_drops_any_fragment_of_a_secret_at_the_cut(tmp_path: Path) -> None:
    log = _new_log(tmp_path, secrets=[SECRET])
    text = "a" * 1000 + SECRET[:7]  # the cap fell inside the secret
    log.truncated_line(text)
    line = _log_text(log)
    assert line.endswith(f" {NOTE_PREFIX}line truncated at {LINE_CAP_BYTES} bytes\n")
    assert SECRET[:3] not in line
    longest = Masker([SECRET]).longest_form  # the longest printed form of the secret
    assert longest >= len(SECRET) and line.startswith("a" * (len(text) - longest) + " ")


def test_order_log_tail_is_bounded_and_lines_end_with_a_newline(tmp_path: Path) -> None:
    log = _new_log(tmp_path)
    for i in range(2000):
        log.line(f"line {i}")
    assert len(log.tail) == LOG_TAIL_CHARS and log.tail.endswith("line 1999\n")
    assert _log_text(log).splitlines()[0] == "line 0"


def test_a_broken_console_does_not_stop_the_log_file(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = OrderLog(tmp_path / "log.txt", stream, Masker())
    log.line("before")
    stream.close()  # writes now raise ValueError
    log.line("after")
    log.line("again")
    assert _log_text(log) == "before\nafter\nagain\n"


def test_writes_after_close_are_dropped_quietly(tmp_path: Path) -> None:
    """A reader thread abandoned to a stray process may still write after the order is over."""
    log = _new_log(tmp_path)
    log.line("kept")
    log.close()
    log.line("late")
    log.flush()
    assert log.path.read_text() == "kept\n" and log.tail == "kept\n"


# ---- process supervision -----------------------------------------------------------------------


def test_pump_cuts_endless_lines_and_resumes_at_the_next_one(tmp_path: Path) -> None:
    log = _new_log(tmp_path)
    data = b"a" * (3 * LINE_CAP_BYTES + 10) + b"\n" + b"next\n" + b"bad \xff byte\n" + b"no newline at end"
    pump(io.BytesIO(data), log)
    lines = _log_text(log).splitlines()
    assert len(lines) == 4
    assert lines[0] == "a" * LINE_CAP_BYTES + f" {NOTE_PREFIX}line truncated at {LINE_CAP_BYTES} bytes"
    assert lines[1:] == ["next", "bad \ufffd byte", "no newline at end"]


def _script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "script.sh"
    path.write_text(text, encoding="utf-8")
    return path


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}




def _wait_group_gone(pgid: int) -> list[int]:
    deadline = time.monotonic() + 10
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return live_group_members(pgid)


def test_run_script_reports_the_exit_code_and_streams_both_outputs(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IAC_CI_TEST_SENTINEL", "worker-only")
    log = _new_log(tmp_path)
    script = _script(tmp_path, 'echo "out $ONLY"; echo err >&2; pwd; env; exit 7\n')
    end = run_script(script, cwd=tmp_path, env=_env(ONLY="given"), log=log, limit=30, source="test",
                     kill_grace_seconds=1)
    assert (end.returncode, end.timed_out) == (7, False)
    lines = _log_text(log).splitlines()
    assert lines[:3] == ["out given", "err", str(tmp_path.resolve())]
    assert "ONLY=given" in lines and not any("IAC_CI_TEST_SENTINEL" in line for line in lines)


def test_run_script_reports_a_signal_death_as_popen_does(tmp_path: Path) -> None:
    end = run_script(_script(tmp_path, "kill -9 $$\n"), cwd=tmp_path, env=_env(), log=_new_log(tmp_path), limit=30,
                     source="test", kill_grace_seconds=1)
    assert (end.returncode, end.timed_out) == (-signal.SIGKILL, False)


def test_run_script_time_limit_ends_the_group(tmp_path: Path) -> None:
    pgid_file = tmp_path / "pgid"
    log = _new_log(tmp_path)
    began = time.monotonic()
    end = run_script(_script(tmp_path, f"echo $$ > {pgid_file}\nsleep 1000 & sleep 1000\n"), cwd=tmp_path,
                     env=_env(), log=log, limit=1.0, source="the test's limit", kill_grace_seconds=5)
    assert end.timed_out and time.monotonic() - began < 5  # the group obeyed SIGTERM: no need to wait the grace
    assert "time limit of 1s reached (the test's limit); sending SIGTERM, SIGKILL after 5s" in _log_text(log)
    assert _wait_group_gone(int(pgid_file.read_text())) == []


def test_an_interrupted_worker_still_kills_the_group_within_the_capped_grace(tmp_path: Path) -> None:
    """SIGTERM to the worker becomes SystemExit (entrypoint); the group must die before it propagates,
    and a long ``kill_grace_seconds`` must not delay the worker's own report past the cap."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    pgid_file = tmp_path / "pgid"
    script = _script(tmp_path, f"trap '' TERM\necho $$ > {pgid_file}\nsleep 1000 & sleep 1000\n")

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signal.SIGTERM)

    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 20
        while not (pgid_file.exists() and pgid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_usr1)
    timer = threading.Thread(target=interrupt_when_started, daemon=True)
    try:
        timer.start()
        began = time.monotonic()
        with pytest.raises(SystemExit):
            run_script(script, cwd=tmp_path, env=_env(), log=_new_log(tmp_path), limit=60, source="test",
                       kill_grace_seconds=60)
        elapsed = time.monotonic() - began
    finally:
        timer.join(5)
        signal.signal(signal.SIGUSR1, previous)
    assert 4.5 <= elapsed < 20  # SIGTERM and a grace first, but capped at 5 s, not the 60 s asked for
    assert _wait_group_gone(int(pgid_file.read_text())) == []


def test_wait_exit_does_not_reap(tmp_path: Path) -> None:
    """The group id is the leader's pid: it stays ours only while the leader is unreaped."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(3)"])
    try:
        assert wait_exit(proc.pid, 0.05) is False
        assert wait_exit(proc.pid, 20) is True
        assert os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None  # still reapable
    finally:
        assert proc.wait() == 3  # reaped here, with its real status: nobody reaped it before


def test_terminate_group_reports_whether_the_group_obeyed(tmp_path: Path) -> None:
    reader = threading.Thread(target=lambda: None)
    reader.start()
    reader.join()
    obeying = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; echo ignoring; sleep 1000"], start_new_session=True,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ignoring\n"  # the trap is set
        assert terminate_group(obeying.pid, reader, 10) is True
        began = time.monotonic()
        assert terminate_group(stubborn.pid, reader, 0.3) is False
        assert 0.3 <= time.monotonic() - began < 5
    finally:
        for proc in (obeying, stubborn):
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        if stubborn.stdout is not None:
            stubborn.stdout.close()
    assert obeying.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL


# ---- transfer over presigned URLs --------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    """A real HTTP server on 127.0.0.1: each request gets the next scripted status, then 200."""

    statuses: list[int]
    body: bytes = b""
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        data = req.rfile.read(length) if length else b""
        self.seen.append(Seen(req.command, req.path, {k.lower(): v for k, v in req.headers.items()}, data))
        status = self.statuses.pop(0) if self.statuses else 200
        payload = self.body if status == 200 else b"<Error>scripted</Error>"
        req.send_response(status)
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)


@pytest.fixture()
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(statuses: list[int], body: bytes = b"") -> ScriptedServer:
        scripted = ScriptedServer(list(statuses), body)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                scripted.handle(self)

            def do_PUT(self) -> None:
                scripted.handle(self)

            def log_message(self, format: str, *args: object) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        scripted.url = f"http://127.0.0.1:{server.server_address[1]}/bucket/key?X-Amz-Signature=s3cr3tsig"
        return scripted

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_get_retries_5xx_then_succeeds(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    server = serve([503, 500], body=b"bundle bytes")
    began = time.monotonic()
    http_get(server.url, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"bundle bytes"
    assert [s.method for s in server.seen] == ["GET"] * 3
    assert time.monotonic() - began >= sum(HTTP_RETRY_DELAYS[:2]) - 0.05  # it backed off between attempts


def test_put_of_a_file_resends_it_whole_on_retry(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    body = tmp_path / "log.txt"
    body.write_bytes(b"line\n" * 10_000)
    server = serve([502])
    http_put(server.url, body, "text/plain; charset=utf-8", headers={"If-None-Match": "*"})
    assert len(server.seen) == 2
    for seen in server.seen:
        assert seen.method == "PUT" and seen.body == body.read_bytes()
        assert seen.headers["content-type"] == "text/plain; charset=utf-8"
        assert seen.headers["content-length"] == str(body.stat().st_size)
        assert seen.headers["if-none-match"] == "*"


def test_put_of_bytes_is_labelled_with_the_given_content_type(serve: Callable[..., ScriptedServer]) -> None:
    server = serve([])
    http_put(server.url, b'{"a": 1}', "application/json")
    assert [(s.body, s.headers["content-type"], s.headers["content-length"]) for s in server.seen] == [
        (b'{"a": 1}', "application/json", "8")
    ]


@pytest.mark.parametrize("status", [403, 404, 412])
def test_a_permanent_http_error_is_not_retried(serve: Callable[..., ScriptedServer], status: int) -> None:
    server = serve([status])
    with pytest.raises(TransferError) as caught:
        http_put(server.url, b"{}", "application/json")
    assert caught.value.status == status and str(caught.value).startswith(f"HTTP {status} ")
    assert len(server.seen) == 1
    assert "s3cr3tsig" not in str(caught.value) and "127.0.0.1" not in str(caught.value)


def test_a_persistent_5xx_gives_up_after_the_retries(serve: Callable[..., ScriptedServer], tmp_path: Path) -> None:
    server = serve([503] * 10)
    with pytest.raises(TransferError) as caught:
        http_get(server.url, tmp_path / "out")
    assert caught.value.status == 503
    assert len(server.seen) == 1 + len(HTTP_RETRY_DELAYS)


def test_an_unreachable_server_is_a_network_error_without_the_url(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    url = f"http://127.0.0.1:{port}/bucket/key?X-Amz-Signature=s3cr3tsig"
    began = time.monotonic()
    with pytest.raises(TransferError) as caught:
        http_get(url, tmp_path / "out")
    assert caught.value.status is None and str(caught.value).startswith("network error: ")
    assert "s3cr3tsig" not in str(caught.value)
    assert time.monotonic() - began >= sum(HTTP_RETRY_DELAYS) - 0.05  # retried, with the back-off


# ---- the sandbox: the log out of the commands' reach, leftovers killed, the commands' user ----------------


def test_the_workers_order_log_has_no_name_and_is_uploaded_from_its_own_handle(
        serve: Callable[..., ScriptedServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "tmp"  # the temporary directory the log would use, seen by this test alone
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    log = OrderLog(None, None, Masker())
    try:
        log.line("genuine output")
        log.note("a note")
        body = log.upload_body()
        assert isinstance(body, Path) and body.parent == Path("/proc/self/fd")
        assert os.readlink(body).endswith("(deleted)")  # O_TMPFILE: a file that never had a name
        assert list(private.iterdir()) == []
        server = serve([502])  # a retry reopens the handle and sends the whole log again
        http_put(server.url, body, "text/plain; charset=utf-8")
        assert [s.body for s in server.seen] == [f"genuine output\n{NOTE_PREFIX}a note\n".encode()] * 2
    finally:
        log.close()
    with pytest.raises(ValueError, match="closed"):
        log.upload_body()


SUBREAPER = """
import json, os, subprocess, sys, time
from lambda_runtime.worker.hardening import set_child_subreaper
from lambda_runtime.worker import sandbox
assert set_child_subreaper()
subprocess.run(["bash", "-c", sys.argv[1]], check=True)
pids = []
for name in ("setsid", "same-group", "double-fork"):
    while not os.path.exists(name) or not open(name).read().strip():
        time.sleep(0.02)
    pids.append(int(open(name).read()))
parents = [sandbox.process_table()[pid].ppid for pid in pids]
sweep = sandbox.kill_descendants()
print(json.dumps({"me": os.getpid(), "pids": pids, "parents": parents, "killed": sweep.killed,
                  "survivors": list(sweep.survivors), "left": [p for p in pids if os.path.exists(f"/proc/{p}")]}))
"""
ORPHANS = ("setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > setsid; "
           "(sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > same-group); "
           "python3 -c 'import os, time\nif os.fork() == 0:\n os.setpgid(0, 0)\n if os.fork() == 0:\n"
           "  open(\"double-fork\", \"w\").write(str(os.getpid())); time.sleep(1000)\n os._exit(0)\nos.wait()'")


def test_a_subreaper_finds_and_kills_setsid_and_double_fork_orphans(tmp_path: Path) -> None:
    """In a process of its own: a subreaper adopts orphans, and the test runner must not become one."""
    proc = subprocess.run([sys.executable, "-c", SUBREAPER, ORPHANS], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr
    out = json_loads(proc.stdout)
    assert out["parents"] == [out["me"]] * 3  # all three orphans were reparented to the subreaper
    assert out["killed"] == 3 and out["survivors"] == [] and out["left"] == []  # killed and reaped, no zombies


def test_clearing_a_directory_removes_links_not_their_targets_and_locked_trees(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the sandbox's\n")
    root = tmp_path / "tmp"
    (root / "locked" / "deep").mkdir(parents=True)
    (root / "locked" / "deep" / "f").write_text("x")
    (root / "file").write_text("x")
    (root / "link").symlink_to(outside)
    (root / "locked" / "deep").chmod(0)
    (root / "locked").chmod(0o500)
    assert sandbox.clear_directory(root) == ()
    assert list(root.iterdir()) == [] and (outside / "keep.txt").exists()


def test_the_uid_sweep_refuses_root() -> None:
    with pytest.raises(ValueError, match="root"):
        sandbox.kill_user_processes(0)


def test_an_unclaimed_process_does_not_sweep() -> None:
    """The test runner (or any library use) has not claimed a sandbox: cleaning must leave its children alone."""
    child = subprocess.Popen(["sleep", "1000"])
    try:
        assert not sandbox.claimed()
        assert sandbox.clean() == sandbox.Sweep() and sandbox.kill_leftovers() == sandbox.Sweep()
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_sandbox_detection_needs_what_only_the_services_set() -> None:
    assert not sandbox.on_lambda({"AWS_LAMBDA_FUNCTION_NAME": "f"})  # a test environment may set the name
    assert sandbox.on_lambda({"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"})
    assert sandbox.on_codebuild({"CODEBUILD_BUILD_ID": "p:1"}) and not sandbox.on_codebuild({})


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root (the CodeBuild worker's case)")
def test_the_command_user_is_resolved_and_never_root() -> None:
    assert sandbox.command_user({}) is None  # not on CodeBuild, nothing asked for: the worker's own user
    assert sandbox.command_user({"IAC_CI_COMMAND_USER": "nobody"}) == sandbox.CommandUser("nobody", 65534, 65534)
    assert sandbox.command_user({"IAC_CI_COMMAND_USER": "23456"}) == sandbox.CommandUser("23456", 23456, 23456)
    for root in ("root", "0"):
        with pytest.raises(sandbox.SandboxError, match="never run as root"):
            sandbox.command_user({"IAC_CI_COMMAND_USER": root})
    with pytest.raises(sandbox.SandboxError, match="the image creates iac-ci-order"):
        sandbox.command_user({"CODEBUILD_BUILD_ID": "p:1"})  # on CodeBuild without the image's user: refuse


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root (the CodeBuild worker's case)")
def test_run_script_runs_the_commands_as_the_given_user(tmp_path: Path) -> None:
    log = _new_log(tmp_path)
    with tempfile.TemporaryDirectory() as shared:  # pytest's tmp_path is private to root
        Path(shared).chmod(0o755)
        script = _script(Path(shared), 'echo "$(id -u) $(id -g) $(id -G)"\n')
        script.chmod(0o644)
        end = run_script(script, cwd=Path("/"), env=_env(), log=log, limit=30, source="test", kill_grace_seconds=1,
                         user=sandbox.CommandUser("23456", 23456, 23457))
    assert end.returncode == 0, _log_text(log)
    assert _log_text(log).splitlines() == ["23456 23457 23457"]  # and no supplementary groups of the worker's
