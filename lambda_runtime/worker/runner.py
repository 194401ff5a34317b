"""Run one order: fetch its bundle, run its commands, publish artifacts, report the result.

The same code runs inside the Lambda handler and the CodeBuild entrypoint, so an order
behaves identically on both targets. Everything the worker is given (bundle, inputs, the
places to write log/result/artifacts) arrives as presigned URLs: the worker itself needs no
AWS permissions beyond KMS for sops, and those URLs never reach the commands' environment or
disk, so a command cannot forge its own result or read another order's data.

Every order ends in a reported result, whatever went wrong, because the orchestrator only
moves on when a result object appears (or the watchdog writes one much later).
"""

from __future__ import annotations

import http.client
import logging
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, BinaryIO, TextIO

from pydantic import ValidationError

from lambda_runtime import sops
from lambda_runtime.masking import Masker, redact_credentials
from lambda_runtime.schema.contract import (
    BUNDLE_CODE_DIR,
    BUNDLE_MANIFEST,
    BUNDLE_SECRETS,
    LOG_TAIL_CHARS,
    Manifest,
    OrderResult,
    WorkerPayload,
)
from lambda_runtime.schema.status import OrderStatus

logger = logging.getLogger(__name__)

LINE_CAP_BYTES = 64 * 1024
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
ROLE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
HTTP_TIMEOUT_SECONDS = 60
HTTP_RETRY_DELAYS = (0.5, 1.0, 2.0)  # three retries after the first attempt
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
POLL_SECONDS = 0.05
READER_JOIN_SECONDS = 5.0
INTERRUPT_GRACE_CAP_SECONDS = 5.0
MAX_ERROR_CHARS = 4000
NOTE_PREFIX = "[iac-ci] "


class OrderFailure(Exception):
    """An engine-side reason the order cannot run; its message is shown to the user as is."""


class PayloadError(ValueError):
    """The worker payload is unusable; there is nowhere to report, so the caller must fail loudly."""


class TransferError(Exception):
    """An HTTP transfer that failed for good; ``status`` tells a 412 (someone reported first) apart."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WorkerRun:
    """``run_order``'s result plus whether it reached S3: the CodeBuild exit code needs both."""

    result: OrderResult
    reported: bool


@dataclass(frozen=True)
class _Outcome:
    status: OrderStatus
    exit_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Prepared:
    manifest: Manifest
    workdir: Path
    env: dict[str, str]


class _Clock:
    """The caller's deadline is a budget for the whole call, so it starts ticking on entry."""

    def __init__(self, deadline_seconds: float | None):
        self._end = None if deadline_seconds is None else time.monotonic() + deadline_seconds

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()


# ---- public entry points -----------------------------------------------------------------------


def parse_payload(raw: Mapping[str, object] | str | bytes) -> WorkerPayload:
    """Validate a payload without echoing its values: they are URLs that must not reach any log."""
    try:
        if isinstance(raw, (str, bytes, bytearray)):
            return WorkerPayload.model_validate_json(raw)
        return WorkerPayload.model_validate(raw)
    except ValidationError as exc:
        raise PayloadError("invalid worker payload: " + _validation_summary(exc)) from None


def run_order(
    payload: WorkerPayload,
    *,
    deadline_seconds: float | None = None,
    log_stream: TextIO | None = sys.stdout,
    workdir_parent: str | None = None,
) -> OrderResult:
    """Run the order and report its result; returns the result this worker produced.

    Never raises for anything that happens to the order: every failure becomes a ``failed``
    (or ``timed_out``) result, uploaded like a success. If another producer reported first
    (412), this worker's result is still returned, but the stored one is left alone.
    """
    return execute_order(
        payload, deadline_seconds=deadline_seconds, log_stream=log_stream, workdir_parent=workdir_parent
    ).result


def execute_order(
    payload: WorkerPayload,
    *,
    deadline_seconds: float | None = None,
    log_stream: TextIO | None = sys.stdout,
    workdir_parent: str | None = None,
) -> WorkerRun:
    """``run_order`` that also says whether the result was stored (or already present)."""
    clock = _Clock(deadline_seconds)
    started_at = time.time()
    base_masker = Masker(_payload_urls(payload))
    tmp: Path | None = None
    log: OrderLog | None = None
    interrupted: BaseException | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix="iac-ci-order-", dir=workdir_parent))
        log = OrderLog(tmp / "log.txt", log_stream, base_masker)
        outcome = _attempt(payload, tmp, log, clock)
    except BaseException as exc:  # noqa: BLE001 - even an interrupt must leave a result behind
        if not isinstance(exc, Exception):
            interrupted = exc
        outcome = _Outcome(OrderStatus.FAILED, None, _describe_unexpected(exc))
        if log is not None:
            log.note(f"order failed: {outcome.error}")
    try:
        result = _result(payload, outcome, started_at, log, base_masker)
        reported = _report(payload, result, log)
    finally:
        if log is not None:
            log.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted is not None:
        raise interrupted
    return WorkerRun(result, reported)


# ---- the order log -----------------------------------------------------------------------------


class OrderLog:
    """Every line anyone will see passes through here, so no path can skip masking.

    The masked lines go to a file (uploaded at the end), to the live stream (CloudWatch or the
    CodeBuild console) and into the tail kept for the result. Writes are serialized because the
    output reader thread and the worker's own notes interleave.
    """

    def __init__(self, path: Path, stream: TextIO | None, masker: Masker):
        self.path = path
        self._file: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._stream = stream
        self._masker = masker
        self._longest_secret = 0
        self._tail = ""
        self._closed = False
        self._lock = threading.Lock()

    def add_secrets(self, secrets: list[str], base: list[str]) -> None:
        with self._lock:
            self._masker = Masker([*base, *secrets])
            self._longest_secret = max((len(s) for s in secrets), default=0)

    def mask(self, text: str) -> str:
        return self._masker.mask(text)

    def line(self, text: str) -> None:
        self._write(self._masker.mask(text))

    def truncated_line(self, text: str) -> None:
        """A line cut at the cap may end inside a secret; drop enough of its end that no fragment
        of one survives (JSON escaping can make a value up to six times longer)."""
        cut = max(0, len(text) - 6 * self._longest_secret)
        self._write(self._masker.mask(text[:cut]) + f" {NOTE_PREFIX}line truncated at {LINE_CAP_BYTES} bytes")

    def note(self, message: str) -> None:
        self.line(NOTE_PREFIX + message)

    @property
    def tail(self) -> str:
        with self._lock:
            return self._tail

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._file.close()

    def _write(self, masked: str) -> None:
        if not masked.endswith("\n"):
            masked += "\n"
        with self._lock:
            if self._closed:  # a reader abandoned after a stray process kept the pipe open
                return
            self._file.write(masked)
            self._tail = (self._tail + masked)[-LOG_TAIL_CHARS:]
            if self._stream is not None:
                try:
                    self._stream.write(masked)
                    self._stream.flush()
                except (OSError, ValueError):
                    self._stream = None  # a broken console must not fail the order


# ---- the order, step by step ------------------------------------------------------------------


def _attempt(payload: WorkerPayload, tmp: Path, log: OrderLog, clock: _Clock) -> _Outcome:
    """Everything that can go wrong inside the order becomes an outcome here, never an exception."""
    try:
        prepared = _prepare(payload, tmp, log)
        outcome = _run_commands(payload, prepared, tmp, log, clock)
        if outcome.status is OrderStatus.SUCCEEDED and prepared.manifest.artifacts:
            try:
                _publish_artifacts(payload, prepared, tmp, log)
            except OrderFailure as exc:  # the commands did exit 0: keep that exit code
                outcome = replace(outcome, status=OrderStatus.FAILED, error=str(exc))
    except OrderFailure as exc:
        outcome = _Outcome(OrderStatus.FAILED, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - a worker bug still has to produce a result
        logger.error("internal worker error: %s", log.mask(redact_credentials(repr(exc))))
        outcome = _Outcome(OrderStatus.FAILED, None, _describe_unexpected(exc))
    if outcome.status is OrderStatus.SUCCEEDED:
        log.note("order succeeded")
    else:
        log.note(f"order {outcome.status.value}: {redact_credentials(outcome.error or '')}")
    return outcome


def _prepare(payload: WorkerPayload, tmp: Path, log: OrderLog) -> _Prepared:
    """Bundle, secrets, working directory and inputs: all before a single command runs."""
    log.note(f"order {payload.order} of run {payload.run_id}, attempt {payload.attempt}")
    raw_manifest, encrypted = _fetch_bundle(payload, tmp)
    manifest = _load_manifest(raw_manifest, payload)
    secrets = _load_secrets(encrypted, tmp, manifest)
    log.add_secrets(list(secrets.values()), _payload_urls(payload))
    workdir = _workdir(tmp, manifest)
    _place_inputs(payload, manifest, workdir, tmp, log)
    return _Prepared(manifest, workdir, _command_env(manifest, secrets, tmp))


def _fetch_bundle(payload: WorkerPayload, tmp: Path) -> tuple[bytes, bytes | None]:
    """Download the bundle, unpack ``code/`` into ``<tmp>/code`` and return the manifest and the
    encrypted secrets. Code is unpacked with ``<tmp>/code`` as the boundary, so nothing in the
    bundle (not even a link) can reach the worker's own files next to it; anything else in the
    archive is ignored."""
    archive = tmp / "bundle.tar.gz"
    try:
        _http_get(payload.bundle_url, archive)
    except TransferError as exc:
        raise OrderFailure(f"could not download the order's bundle: {exc}") from None
    code = tmp / BUNDLE_CODE_DIR
    code.mkdir()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            manifest = _read_member(tar, members, BUNDLE_MANIFEST)
            secrets = _read_member(tar, members, BUNDLE_SECRETS)
            _safe_extract(tar, _rebased(members, BUNDLE_CODE_DIR), code, what="the bundle")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OrderFailure(f"the order's bundle is not a readable gzip tar: {exc}") from None
    finally:
        archive.unlink(missing_ok=True)
    if manifest is None:
        raise OrderFailure(f"the order's bundle has no {BUNDLE_MANIFEST}")
    return manifest, secrets


def _read_member(tar: tarfile.TarFile, members: list[tarfile.TarInfo], name: str) -> bytes | None:
    for info in members:
        if _member_name(info) == name:
            if not info.isfile():
                raise OrderFailure(f"{name} in the order's bundle is not a regular file")
            handle = tar.extractfile(info)
            return handle.read() if handle is not None else b""
    return None


def _rebased(members: list[tarfile.TarInfo], prefix: str) -> list[tarfile.TarInfo]:
    """The members under ``prefix/``, renamed relative to it (hard links too, which name members)."""
    out = []
    for info in members:
        name = _member_name(info)
        if not name.startswith(prefix + "/"):
            continue
        changes = {"name": name[len(prefix) + 1 :]}
        if info.islnk():
            link = posixpath.normpath(info.linkname)
            if not link.startswith(prefix + "/"):
                raise OrderFailure(f"refused to unpack the bundle: hard link {name} points outside {prefix}/")
            changes["linkname"] = link[len(prefix) + 1 :]
        out.append(info.replace(**changes, deep=False))
    return out


def _load_manifest(raw: bytes, payload: WorkerPayload) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise OrderFailure(f"the bundle's {BUNDLE_MANIFEST} is invalid: {_validation_summary(exc)}") from None
    if (manifest.run_id, manifest.order) != (payload.run_id, payload.order):
        raise OrderFailure(
            f"the bundle belongs to order {manifest.order!r} of run {manifest.run_id!r}, "
            f"not to order {payload.order!r} of run {payload.run_id!r}"
        )
    return manifest


def _load_secrets(encrypted: bytes | None, tmp: Path, manifest: Manifest) -> dict[str, str]:
    """Decrypt with the KMS context pinned to this run and order, so a secrets file copied from
    another order's bundle is refused instead of handed to these commands."""
    values: dict[str, str] = {}
    if encrypted is not None:
        path = tmp / BUNDLE_SECRETS  # sops wants a path; the file is ciphertext and removed right after
        path.write_bytes(encrypted)
        try:
            values = sops.decrypt(path, expected_context={"run_id": manifest.run_id, "order": manifest.order})
        except (sops.SopsError, ValueError, OSError, subprocess.SubprocessError) as exc:
            raise OrderFailure(f"could not decrypt the order's secrets: {exc}") from None
        finally:
            path.unlink(missing_ok=True)
    missing = [name for name in manifest.secret_env if name not in values]
    if manifest.has_role:
        missing += [key for key in ROLE_KEYS[:2] if key not in values]
    if missing:
        raise OrderFailure("the order's secrets file lacks: " + ", ".join(sorted(set(missing))))
    return values


def _workdir(tmp: Path, manifest: Manifest) -> Path:
    code = tmp / BUNDLE_CODE_DIR
    root = code.resolve()
    workdir = (code / (manifest.dir or "")).resolve()
    if not workdir.is_relative_to(root):
        raise OrderFailure(f"the order's dir {manifest.dir!r} leaves the source tree")
    workdir.mkdir(parents=True, exist_ok=True)
    if not workdir.resolve().is_relative_to(root):
        raise OrderFailure(f"the order's dir {manifest.dir!r} leaves the source tree")
    return workdir


def _place_inputs(payload: WorkerPayload, manifest: Manifest, workdir: Path, tmp: Path, log: OrderLog) -> None:
    """Copy in only the declared path of each producer's artifacts, so an order sees exactly what
    it asked for and a missing input fails now rather than halfway through an apply."""
    offered = {(i.from_order, _relative_path(i.path, "input path")) for i in payload.inputs}
    for wanted in manifest.inputs:
        if (wanted.from_order, _relative_path(wanted.path, "input path")) not in offered:
            raise OrderFailure(f"no download was provided for input {wanted.path!r} of order {wanted.from_order!r}")
    for index, item in enumerate(payload.inputs):
        rel = _relative_path(item.path, "input path")
        archive = tmp / f"input-{index}.tar.gz"
        try:
            _http_get(item.url, archive)
        except TransferError as exc:
            raise OrderFailure(f"could not download the artifacts of order {item.from_order!r}: {exc}") from None
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if _is_under(_member_name(m), rel)]
                if not members:
                    raise OrderFailure(f"input {rel!r} is not among the artifacts of order {item.from_order!r}")
                _safe_extract(tar, members, workdir, what=f"the artifacts of order {item.from_order!r}")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise OrderFailure(
                f"the artifacts of order {item.from_order!r} are not a readable gzip tar: {exc}"
            ) from None
        finally:
            archive.unlink(missing_ok=True)
        log.note(f"placed input {rel} from order {item.from_order}")


def _command_env(manifest: Manifest, secrets: Mapping[str, str], tmp: Path) -> dict[str, str]:
    """A fresh environment, never a copy of ours: the worker's own AWS credentials (and the
    payload with its URLs, on CodeBuild) must not be visible to user commands."""
    home, scratch = tmp / "home", tmp / "tmp"
    home.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "HOME": str(home), "TMPDIR": str(scratch), "LANG": "C.UTF-8"}
    env.update(manifest.env)
    env.update(
        {
            "IAC_CI_RUN_ID": manifest.run_id,
            "IAC_CI_ORDER": manifest.order,
            "IAC_CI_TRACE_ID": manifest.trace_id,
            "IAC_CI_FLOW_ID": manifest.flow_id,
        }
    )
    if manifest.state_bucket:
        env["IAC_CI_STATE_BUCKET"] = manifest.state_bucket
    env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = manifest.region
    env.update(secrets)
    if manifest.embedded_endpoint and manifest.has_role:
        env["AWS_ENDPOINT_URL"] = manifest.embedded_endpoint
    return env


# ---- running the commands ----------------------------------------------------------------------


def _script(cmds: list[str]) -> str:
    """Each command is announced before it runs, so the log shows where a failure happened."""
    lines = ["set -eo pipefail"]
    for cmd in cmds:
        lines.append("printf '%s\\n' " + shlex.quote("$ " + cmd))
        lines.append(cmd)
    return "\n".join(lines) + "\n"


def _time_limit(payload: WorkerPayload, manifest: Manifest, clock: _Clock) -> tuple[float, str]:
    limits = [(float(manifest.timeout), "the order's timeout"), (float(payload.timeout), "the dispatch timeout")]
    remaining = clock.remaining()
    if remaining is not None:
        limits.append((remaining, "the worker's remaining time"))
    if payload.not_after is not None:  # the orchestrator kept a margin for reporting before the watchdog speaks
        limits.append((payload.not_after - time.time(), "the watchdog's deadline"))
    return min(limits, key=lambda item: item[0])


def _run_commands(payload: WorkerPayload, prepared: _Prepared, tmp: Path, log: OrderLog, clock: _Clock) -> _Outcome:
    manifest = prepared.manifest
    limit, source = _time_limit(payload, manifest, clock)
    if limit <= 0:
        return _Outcome(OrderStatus.TIMED_OUT, None, f"no time left to start the commands ({source})")
    script = tmp / "script.sh"
    script.write_text(_script(manifest.cmds), encoding="utf-8")
    log.note(f"running {len(manifest.cmds)} command(s) in {manifest.dir or '.'} (limit {limit:.0f}s)")
    proc = subprocess.Popen(
        [shutil.which("bash") or "/bin/bash", str(script)],
        cwd=prepared.workdir,
        env=prepared.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    reader = threading.Thread(target=_pump, args=(proc.stdout, log), name="iac-ci-output", daemon=True)
    reader.start()
    timed_out = False
    finished = False
    try:
        if not _wait_exit(proc.pid, limit):
            timed_out = True
            log.note(
                f"time limit of {limit:.0f}s reached ({source}); sending SIGTERM, "
                f"SIGKILL after {payload.kill_grace_seconds}s"
            )
            if not _terminate_group(proc.pid, reader, payload.kill_grace_seconds):
                log.note(f"still running {payload.kill_grace_seconds}s after SIGTERM; sending SIGKILL")
        finished = True
    finally:
        if not finished:  # interrupted (SIGTERM to the worker): still stop the commands first
            _terminate_group(proc.pid, reader, min(payload.kill_grace_seconds, INTERRUPT_GRACE_CAP_SECONDS))
        _signal_group(proc.pid, signal.SIGKILL)  # leftovers too; before reaping, so the id cannot be reused
        proc.wait()
        reader.join(READER_JOIN_SECONDS)
        if reader.is_alive():
            log.note("a process that left the process group still holds the output open; ignoring it")
        else:
            proc.stdout.close()
    return _outcome(proc.returncode, timed_out, limit, source)


def _outcome(returncode: int, timed_out: bool, limit: float, source: str) -> _Outcome:
    if timed_out:
        return _Outcome(OrderStatus.TIMED_OUT, None, f"timed out after {limit:.0f}s ({source})")
    if returncode == 0:
        return _Outcome(OrderStatus.SUCCEEDED, 0)
    code = returncode if returncode > 0 else 128 - returncode  # killed by a signal: the shell's convention
    return _Outcome(OrderStatus.FAILED, code, f"a command exited with code {code}")


def _pump(stream: BinaryIO, log: OrderLog) -> None:
    """Stream output line by line; an endless line is cut so memory stays bounded."""
    try:
        while True:
            chunk = stream.readline(LINE_CAP_BYTES)
            if not chunk:
                return
            if len(chunk) >= LINE_CAP_BYTES and not chunk.endswith(b"\n"):
                _skip_rest_of_line(stream)
                log.truncated_line(chunk.decode("utf-8", errors="replace"))
            else:
                log.line(chunk.decode("utf-8", errors="replace"))
    except (OSError, ValueError):  # pipe closed under us after the reader was abandoned
        return


def _skip_rest_of_line(stream: BinaryIO) -> None:
    while True:
        rest = stream.readline(LINE_CAP_BYTES)
        if not rest or rest.endswith(b"\n"):
            return


def _has_exited(pid: int) -> bool:
    """Exited but not reaped (WNOWAIT): the process group id stays ours until we reap the leader."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not _has_exited(pid):
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL_SECONDS, left))
    return True


def _terminate_group(pgid: int, reader: threading.Thread, grace: float) -> bool:
    """SIGTERM everyone, then wait until the shell is gone and nobody holds the output (the
    closest portable sign that the whole tree exited); the caller sends SIGKILL after.
    Returns whether they all went within the grace period."""
    _signal_group(pgid, signal.SIGTERM)
    end = time.monotonic() + grace
    while True:
        if _has_exited(pgid) and not reader.is_alive():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(POLL_SECONDS)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---- artifacts ---------------------------------------------------------------------------------


def _publish_artifacts(payload: WorkerPayload, prepared: _Prepared, tmp: Path, log: OrderLog) -> None:
    if not payload.artifacts_url:
        raise OrderFailure("the order declares artifacts but the worker was given nowhere to upload them")
    workdir = prepared.workdir
    declared = [_relative_path(p, "artifact path") for p in prepared.manifest.artifacts]
    missing = [rel for rel in declared if not os.path.lexists(workdir / rel)]
    if missing:
        raise OrderFailure("declared artifact(s) not found after the commands ran: " + ", ".join(missing))
    archive = tmp / "artifacts.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel in _outermost(declared):
            _check_parents_inside(workdir, rel)
            tar.add(workdir / rel, arcname=rel, recursive=True, filter=_artifact_filter(log))
    try:
        _http_put(payload.artifacts_url, archive, "application/gzip")
    except TransferError as exc:
        raise OrderFailure(f"could not upload the artifacts: {exc}") from None
    log.note("uploaded artifacts: " + ", ".join(declared))


def _outermost(paths: list[str]) -> list[str]:
    """``dist`` and ``dist/app.txt`` both declared: archive ``dist`` once."""
    kept: list[str] = []
    for rel in sorted(set(paths), key=len):
        if not any(_is_under(rel, parent) for parent in kept):
            kept.append(rel)
    return kept


def _check_parents_inside(workdir: Path, rel: str) -> None:
    """A declared path reached through a symlinked directory would archive files from outside.
    (The path itself may be a link: it is stored as a link, not followed.)"""
    if not (workdir / rel).parent.resolve().is_relative_to(workdir.resolve()):
        raise OrderFailure(f"artifact {rel!r} leaves the working directory through a symlink")


def _artifact_filter(log: OrderLog) -> Callable[[tarfile.TarInfo], tarfile.TarInfo | None]:
    """Keep links only if they point inside the working directory: the consumer's safe extraction
    would refuse the whole archive otherwise. Links are stored, never followed."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(info.name), info.linkname))
            if posixpath.isabs(info.linkname) or target == ".." or target.startswith("../"):
                log.note(f"artifact link {info.name} points outside the working directory; left out")
                return None
        elif not (info.isfile() or info.isdir() or info.islnk()):
            log.note(f"artifact {info.name} is not a file, directory or link; left out")
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    return keep


# ---- paths and archives ------------------------------------------------------------------------


def _member_name(info: tarfile.TarInfo) -> str:
    """``./dist/`` and ``dist`` are the same member; ``..`` is kept so extraction can refuse it."""
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _is_under(name: str, rel: str) -> bool:
    return name == rel or name.startswith(rel + "/")


def _relative_path(raw: str, what: str) -> str:
    rel = posixpath.normpath(raw.strip())
    if not raw.strip() or posixpath.isabs(rel) or rel in (".", "..") or rel.startswith("../"):
        raise OrderFailure(f"{what} {raw!r} must name something inside the working directory")
    return rel


def _safe_extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path, *, what: str) -> None:
    """The "data" filter refuses absolute paths, ``..``, links leaving ``dest`` and device files."""
    if not hasattr(tarfile, "data_filter"):
        raise OrderFailure("this Python lacks tarfile extraction filters (3.11.4 or newer is required)")
    for info in members:  # "data" allows a ".." that stays inside dest; nothing legitimate needs one
        if ".." in info.name.split("/") or (info.islnk() and ".." in info.linkname.split("/")):
            raise OrderFailure(f"refused to unpack {what}: member {info.name!r} contains '..'")
    try:
        tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise OrderFailure(f"refused to unpack {what}: {exc}") from None


# ---- HTTP through presigned URLs ---------------------------------------------------------------


def _http_get(url: str, dest: Path) -> None:
    def attempt() -> None:
        with (
            urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=HTTP_TIMEOUT_SECONDS) as resp,
            open(dest, "wb") as out,
        ):
            shutil.copyfileobj(resp, out)

    _with_retries(attempt)


def _http_put(url: str, body: bytes | Path, content_type: str, headers: Mapping[str, str] | None = None) -> None:
    """PUT bytes or a file (streamed with an explicit length, so big logs never sit in memory).

    The content type is always explicit: urllib would otherwise label the body as a form and
    some servers would consume it as one.
    """

    def attempt() -> None:
        length = len(body) if isinstance(body, bytes) else body.stat().st_size
        all_headers = {"Content-Type": content_type, "Content-Length": str(length), **(headers or {})}
        with open(body, "rb") if isinstance(body, Path) else _NullContext(body) as data:
            req = urllib.request.Request(url, data=data, method="PUT", headers=all_headers)
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECONDS) as resp:
                resp.read()

    _with_retries(attempt)


class _NullContext:
    def __init__(self, value: bytes):
        self._value = value

    def __enter__(self) -> bytes:
        return self._value

    def __exit__(self, *exc: object) -> None:
        return None


def _with_retries(attempt: Callable[[], None]) -> None:
    """Retry what a retry can fix (network, throttling, 5xx); error text never includes the URL."""
    for delay in (*HTTP_RETRY_DELAYS, None):
        try:
            attempt()
            return
        except urllib.error.HTTPError as exc:
            error = TransferError(f"HTTP {exc.code} {exc.reason}", status=exc.code)
            exc.close()
            if exc.code not in TRANSIENT_HTTP:
                raise error from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            error = TransferError(f"network error: {reason}")
        if delay is None:
            raise error from None
        time.sleep(delay)


# ---- the result --------------------------------------------------------------------------------


def _result(
    payload: WorkerPayload, outcome: _Outcome, started_at: float, log: OrderLog | None, base_masker: Masker
) -> OrderResult:
    error = None
    if outcome.error:
        masked = (log.mask if log is not None else base_masker.mask)(redact_credentials(outcome.error))
        error = masked[:MAX_ERROR_CHARS]
    return OrderResult(
        run_id=payload.run_id,
        order=payload.order,
        attempt=payload.attempt,
        status=outcome.status,
        exit_code=outcome.exit_code,
        started_at=started_at,
        finished_at=time.time(),
        log_tail=log.tail if log is not None else "",
        error=error,
        producer="worker",
    )


def _report(payload: WorkerPayload, result: OrderResult, log: OrderLog | None) -> bool:
    """Log first (the result announces it), then the result, written only if nobody else did."""
    if log is not None:
        log.flush()
        try:
            _http_put(payload.log_url, log.path, "text/plain; charset=utf-8")
        except TransferError as exc:
            logger.error("could not upload the order log: %s", exc)
    try:
        _http_put(
            payload.result_url, result.model_dump_json().encode(), "application/json", headers={"If-None-Match": "*"}
        )
    except TransferError as exc:
        if exc.status == 412:
            logger.warning(
                "a result for %s/%s was already reported (by the watchdog?); leaving it", payload.run_id, payload.order
            )
            return True
        logger.error("could not report the result of %s/%s: %s", payload.run_id, payload.order, exc)
        return False
    return True


# ---- small helpers -----------------------------------------------------------------------------


def _payload_urls(payload: WorkerPayload) -> list[str]:
    urls = [payload.bundle_url, payload.log_url, payload.result_url, *(i.url for i in payload.inputs)]
    if payload.artifacts_url:
        urls.append(payload.artifacts_url)
    return urls


def _validation_summary(exc: ValidationError) -> str:
    """Field names and messages only: pydantic's default text repeats the input values."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())


def _describe_unexpected(exc: BaseException) -> str:
    if isinstance(exc, SystemExit | KeyboardInterrupt):
        return "the worker was stopped before the order finished"
    return f"internal worker error ({type(exc).__name__}): {exc}"
