"""Fetching an order's code: a git ref, an S3 zip, or (embedded mode) a local directory.

Each distinct source is fetched once per run. Git fetches the exact ref or commit asked for
(a shallow fetch of that object, not of the default branch). Tokens reach git through its
environment-config mechanism, never argv, and are masked out of every error.

Zip and git sources are bounded (``SourceLimits``, from ``Settings.max_source_bytes`` and
``max_source_files``) without trusting what the source says about itself:

- zip: the object's size before the download and while streaming it to disk; the member
  count by walking the central directory before ``zipfile`` parses it; the declared total and
  compression ratios; then, while extracting, the bytes actually written (a member's declared
  size is not used to stop reading it), stopping at the cap.
- git: the fetch runs while a watcher measures the repository on disk and kills git past the
  cap; the fetched commit's tree (blob count and sizes, from git's own object store) is checked
  before the checkout, which is watched the same way and measured after.

A source past a cap raises ``SourceTooLarge`` naming the source and the setting; whatever was
written is removed.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.job.model import GitSource, PathSource, S3Source, Source
from lambda_runtime.masking import Masker, redact_credentials
from lambda_runtime.packaging.credentials import PERMANENT_CODES, CredentialResolver
from lambda_runtime.packaging.errors import PackagingError, SourceTooLarge
from lambda_runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

GIT_TIMEOUT = 600
IGNORED = shutil.ignore_patterns(".git")
KiB, MiB = 1024, 1024 * 1024
CHUNK = MiB  # read/write unit: the most a cap can be overshot by in memory, never on disk
# deflate tops out near 1,032:1 (a zip bomb's ratio); source code and binaries compress 2-20:1
MAX_COMPRESSION_RATIO = 200
RATIO_FLOOR_BYTES = 4 * MiB  # small members may compress as they like: they cannot fill a disk
WATCH_INTERVAL_SECONDS = 0.1
BYTES_CAP, FILES_CAP = "max_source_bytes", "max_source_files"
UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class SourceLimits:
    """What one fetched source may take; defaults are those of ``Settings``."""

    max_bytes: int = Settings.model_fields["max_source_bytes"].default
    max_files: int = Settings.model_fields["max_source_files"].default
    max_ratio: int = MAX_COMPRESSION_RATIO

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceLimits:
        return cls(max_bytes=settings.max_source_bytes, max_files=settings.max_source_files)


def source_key(source: Source | None, default_ref: str | None) -> str:
    """Identity of a source within a run (two orders naming the same source share one fetch)."""
    if source is None:
        return "none"
    data: dict[str, Any] = source.model_dump(mode="json", by_alias=True)
    if isinstance(source, GitSource) and source.git.ref is None:
        data["git"]["ref"] = default_ref
    return json.dumps(data, sort_keys=True)


def fetch(
    source: Source | None,
    dest: Path,
    *,
    clients: AwsClients,
    resolver: CredentialResolver,
    default_ref: str | None = None,
    limits: SourceLimits | None = None,
    order: str | None = None,
) -> None:
    """Fetch ``source`` into ``dest``; a ``PackagingError`` names ``order`` (the first order using
    the source) when given, and leaves nothing of the source in ``dest``."""
    limits = limits or SourceLimits()
    dest.mkdir(parents=True, exist_ok=True)
    if source is None:
        return
    try:
        if isinstance(source, GitSource):
            token = resolver.resolve(source.git.token) if source.git.token else None
            fetch_git(source.git.url, source.git.ref or default_ref, dest, token=token, limits=limits)
        elif isinstance(source, S3Source):
            fetch_s3_zip(clients, source.s3, dest, limits=limits)
        elif isinstance(source, PathSource):
            src = Path(source.path)
            if not src.is_dir():
                raise PackagingError(f"source path '{source.path}' is not a directory")
            shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True, ignore=IGNORED)
    except PackagingError as exc:
        _empty(dest)
        if order is None:
            raise
        raise exc.for_order(order) from None
    except BaseException:
        _empty(dest)
        raise


# ---- git ------------------------------------------------------------------------------------
def fetch_git(
    url: str, ref: str | None, dest: Path, *, token: str | None = None, limits: SourceLimits | None = None
) -> str:
    """Fetch ``ref`` (branch, tag or commit; default HEAD) of ``url`` into ``dest``; return the commit."""
    limits = limits or SourceLimits()
    shown = redact_credentials(url)
    masker = Masker([token] if token else [])
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(dest.parent),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_ASKPASS": "/bin/false",
    }
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        masker = Masker([token, basic])
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )

    def git(*args: str, watch: tuple[int, str] | None = None) -> str:
        """Run git in ``dest``; with ``watch=(limit, what)`` git is killed once ``dest`` holds more
        than ``limit`` bytes (the repository while fetching, the work tree while checking out), and
        ``what`` ("fetches", "checks out") says which step went past the cap."""
        argv = ["git", *args]
        if watch is None:
            proc = subprocess.run(argv, cwd=dest, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT)
        else:
            limit, what = watch
            try:
                proc = _run_watched(argv, cwd=dest, env=env, limit=limit, tree_only=what == "checks out")
            except _OverCap:
                raise SourceTooLarge(f"source {shown} {what} past {_size(limits.max_bytes)} ({BYTES_CAP})",
                                     cap=BYTES_CAP) from None
        if proc.returncode != 0:
            detail = masker.mask(redact_credentials(proc.stderr.strip()))[-1500:]
            raise PackagingError(f"git {args[0]} of {shown} failed: {detail}")
        return proc.stdout

    git("init", "-q")
    git("remote", "add", "origin", url)
    want = ref or "HEAD"
    fetching = (limits.max_bytes, "fetches")
    try:
        git("fetch", "-q", "--depth", "1", "origin", want, watch=fetching)
    except SourceTooLarge:
        raise
    except PackagingError:
        # servers that refuse fetching a bare commit id: fetch everything, then resolve it
        git("fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*",
            watch=fetching)
        git("update-ref", "FETCH_HEAD", git("rev-parse", "--verify", want + "^{commit}").strip())
    _check_commit_tree(dest, env, shown, limits)
    git("checkout", "-q", "--detach", "FETCH_HEAD", watch=(limits.max_bytes, "checks out"))
    commit = git("rev-parse", "HEAD").strip()
    shutil.rmtree(dest / ".git", ignore_errors=True)
    size, files = _disk_usage(dest)  # filters and line endings may change sizes: the tree as written
    _check_totals(shown, size, files, limits, verb="checks out")
    return commit


def _check_commit_tree(dest: Path, env: dict[str, str], shown: str, limits: SourceLimits) -> None:
    """Blob count and total size of FETCH_HEAD's tree, read from the fetched objects (whose sizes
    git verified), before anything is checked out; stops reading at the first cap passed."""
    argv = ["git", "ls-tree", "-r", "-l", "-z", "--full-tree", "FETCH_HEAD"]
    with subprocess.Popen(argv, cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        size = files = 0
        try:
            for entry in _split(proc.stdout, b"\0"):
                mode_type_id_size, _, _path = entry.partition(b"\t")
                fields = mode_type_id_size.split()
                if len(fields) == 4 and fields[1] == b"blob":
                    files += 1
                    size += int(fields[3])
                    _check_totals(shown, size, files, limits, verb="checks out")
        finally:
            if proc.poll() is None:
                proc.kill()
        if proc.wait() != 0:
            raise PackagingError(f"git ls-tree of {shown} failed (exit {proc.returncode})")


def _split(stream: IO[bytes], sep: bytes) -> Iterator[bytes]:
    rest = b""
    while chunk := stream.read(64 * KiB):
        *items, rest = (rest + chunk).split(sep)
        yield from items
    if rest:
        yield rest


class _OverCap(Exception):
    pass


def _run_watched(argv: list[str], *, cwd: Path, env: dict[str, str], limit: int,
                 tree_only: bool = False) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` that kills the command's process group once ``cwd`` (without its ``.git``
    when ``tree_only``) holds more than ``limit`` bytes, raising ``_OverCap``. Measured every
    ``WATCH_INTERVAL_SECONDS`` (or 4x the time one measurement takes, for large trees) and once
    more when the command has exited."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + GIT_TIMEOUT
    interval = WATCH_INTERVAL_SECONDS
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                pass
            began = time.monotonic()
            if _disk_usage(cwd, tree_only=tree_only)[0] > limit:
                raise _OverCap
            interval = max(WATCH_INTERVAL_SECONDS, 4 * (time.monotonic() - began))
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(argv, GIT_TIMEOUT)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    if _disk_usage(cwd, tree_only=tree_only)[0] > limit:  # finished between two measurements
        raise _OverCap
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _disk_usage(root: Path, *, tree_only: bool = False) -> tuple[int, int]:
    """(bytes, files) under ``root`` (without ``root/.git`` when ``tree_only``): sizes of everything
    but directories, symlinks not followed; entries vanishing while walked (git's temporary files)
    are skipped."""
    size = files = 0
    top = str(root)
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        if tree_only and folder == top and entry.name == ".git":
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            size += entry.stat(follow_symlinks=False).st_size
                            files += 1
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
    return size, files


# ---- S3 zip ---------------------------------------------------------------------------------
def fetch_s3_zip(clients: AwsClients, uri: str, dest: Path, *, limits: SourceLimits | None = None) -> None:
    limits = limits or SourceLimits()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=dest.parent, prefix=f"{dest.name}-", suffix=".zip") as archive_file:
        _download(clients, uri, archive_file, limits)
        _check_member_count(uri, archive_file, limits)
        try:
            archive = zipfile.ZipFile(archive_file)
        except zipfile.BadZipFile as exc:
            raise PackagingError(f"source {uri} is not a zip file ({exc})") from None
        with archive:
            members = archive.infolist()
            _check_declared(uri, members, dest, limits)
            _extract(uri, archive, members, dest, limits)


def _download(clients: AwsClients, uri: str, out: IO[bytes], limits: SourceLimits) -> None:
    """Stream the object to ``out``: refused before reading when its ContentLength is past the cap,
    and stopped as soon as more bytes than the cap arrive (whatever ContentLength said)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        response = clients.s3.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in PERMANENT_CODES | {"NoSuchKey", "NoSuchBucket", "403", "404"}:
            raise PackagingError(f"source {uri} could not be read ({error_code(exc)})") from None
        raise
    body = response["Body"]
    try:
        length = int(response.get("ContentLength") or 0)
        if length > limits.max_bytes:
            raise SourceTooLarge(f"source {uri} is {_size(length)}, past {_size(limits.max_bytes)} ({BYTES_CAP})",
                                 cap=BYTES_CAP)
        received = 0
        while chunk := body.read(CHUNK):
            received += len(chunk)
            if received > limits.max_bytes:
                raise SourceTooLarge(f"source {uri} is larger than {_size(limits.max_bytes)} ({BYTES_CAP})",
                                     cap=BYTES_CAP)
            out.write(chunk)
    finally:
        body.close()
    out.flush()
    out.seek(0)


EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
EOCD64_LOCATOR = struct.Struct("<4sLQL")
EOCD64 = struct.Struct("<4sQ2H2L4Q")
CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")  # one central directory entry, before its name
CENTRAL_ENTRY_ALLOWANCE = 640  # bytes of central directory per allowed member (paths average far less)


def _check_member_count(uri: str, fp: IO[bytes], limits: SourceLimits) -> None:
    """Count the central directory's entries (walking it, as ``zipfile`` does, rather than trusting
    its entry count) and stop past ``max_files``, before ``zipfile`` builds an object for each.
    An archive this walk cannot follow is left for ``zipfile`` to reject."""
    fp.seek(0, os.SEEK_END)
    end = fp.tell()
    tail_start = max(0, end - EOCD.size - 0xFFFF)
    fp.seek(tail_start)
    tail = fp.read()
    at = len(tail) - EOCD.size  # as zipfile: a record without a comment first, then the last one
    if not (at >= 0 and tail[at:at + 4] == b"PK\x05\x06" and tail[-2:] == b"\0\0"):
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < EOCD.size:
        return
    record = EOCD.unpack_from(tail, at)
    cd_size, cd_end = record[5], tail_start + at
    if cd_size == 0xFFFFFFFF or record[4] == 0xFFFF:  # zip64: sizes in the zip64 record
        locator_at = at - EOCD64_LOCATOR.size
        if locator_at < 0 or tail[locator_at:locator_at + 4] != b"PK\x06\x07":
            return
        fp.seek(EOCD64_LOCATOR.unpack_from(tail, locator_at)[2])
        raw = fp.read(EOCD64.size)
        if len(raw) < EOCD64.size or raw[:4] != b"PK\x06\x06":
            return
        cd_size, cd_end = EOCD64.unpack(raw)[7], tail_start + locator_at - EOCD64.size
    if cd_size > max(MiB, limits.max_files * CENTRAL_ENTRY_ALLOWANCE):  # zipfile reads it into memory
        raise SourceTooLarge(f"source {uri} has a central directory of {_size(cd_size)}, more than "
                             f"{limits.max_files} members take ({FILES_CAP})", cap=FILES_CAP)
    fp.seek(max(0, cd_end - cd_size))
    walked = count = 0
    while walked < cd_size:
        header = fp.read(CENTRAL_HEADER.size)
        if len(header) < CENTRAL_HEADER.size or header[:4] != b"PK\x01\x02":
            return
        fields = CENTRAL_HEADER.unpack(header)
        variable = fields[12] + fields[13] + fields[14]  # name, extra field, comment
        fp.seek(variable, os.SEEK_CUR)
        walked += CENTRAL_HEADER.size + variable
        count += 1
        if count > limits.max_files:
            raise SourceTooLarge(f"source {uri} has more than {limits.max_files} members ({FILES_CAP})",
                                 cap=FILES_CAP)


def _check_declared(uri: str, members: list[zipfile.ZipInfo], dest: Path, limits: SourceLimits) -> None:
    """What the central directory declares: safe paths, the count, the total size and the ratios."""
    root = dest.resolve()
    for info in members:
        name = PurePosixPath(info.filename)
        target = (dest / name).resolve()
        if name.is_absolute() or ".." in name.parts or not target.is_relative_to(root):
            raise PackagingError(f"source {uri} contains an unsafe path '{info.filename}'")
    if len(members) > limits.max_files:
        raise SourceTooLarge(f"source {uri} has {len(members)} members, more than {limits.max_files} ({FILES_CAP})",
                             cap=FILES_CAP)
    declared = sum(i.file_size for i in members)
    if declared > limits.max_bytes:
        raise SourceTooLarge(f"source {uri} expands to {_size(declared)}, past {_size(limits.max_bytes)} "
                             f"({BYTES_CAP})", cap=BYTES_CAP)
    for info in members:
        _check_ratio(uri, info, info.file_size, limits)
    _check_ratio(uri, None, declared, limits, compressed=sum(i.compress_size for i in members))


def _check_ratio(uri: str, info: zipfile.ZipInfo | None, size: int, limits: SourceLimits, *,
                 compressed: int | None = None) -> None:
    compressed = info.compress_size if info is not None else compressed or 0
    if size > RATIO_FLOOR_BYTES and size > limits.max_ratio * max(compressed, 1):
        what = f"member '{info.filename}'" if info is not None else "archive"
        raise SourceTooLarge(f"source {uri}: {what} expands more than {limits.max_ratio} times its compressed "
                             f"size ({_size(compressed)} to more than {_size(size)}): a zip bomb?", cap=BYTES_CAP)


def _extract(uri: str, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], dest: Path,
             limits: SourceLimits) -> None:
    """Extract counting the bytes actually written: each member is read until its compressed data
    ends, not until its declared size, and extraction stops before the write that would pass the
    cap (or the ratio). A member whose content differs from its declared size is refused."""
    written = 0
    compressed_total = sum(i.compress_size for i in members)
    for info in members:
        target = dest / info.filename
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            unbounded = copy.copy(info)
            unbounded.file_size = UNBOUNDED  # zipfile reads to the end of the member's data; we count
            member = 0
            with archive.open(unbounded) as stream, open(target, "wb") as out:
                while chunk := stream.read(CHUNK):
                    member += len(chunk)
                    if written + len(chunk) > limits.max_bytes:
                        raise SourceTooLarge(f"source {uri} expands past {_size(limits.max_bytes)} ({BYTES_CAP})",
                                             cap=BYTES_CAP)
                    _check_ratio(uri, info, member, limits)
                    _check_ratio(uri, None, written + len(chunk), limits, compressed=compressed_total)
                    out.write(chunk)
                    written += len(chunk)
            if member != info.file_size:
                raise PackagingError(f"source {uri} is corrupt: member '{info.filename}' declares "
                                     f"{info.file_size} bytes and holds {member}")
            if (info.external_attr >> 16) & 0o100:  # executable in the archive: executable here
                target.chmod(0o755)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise PackagingError(f"source {uri} is corrupt: member '{info.filename}': {exc}") from None
        except RuntimeError as exc:  # zipfile: encrypted member
            raise PackagingError(f"source {uri}: member '{info.filename}' cannot be read: {exc}") from None
        except OSError as exc:  # e.g. a member under a path another member wrote as a file
            raise PackagingError(f"source {uri}: member '{info.filename}' cannot be written "
                                 f"({exc.strerror or exc})") from None


# ---- helpers --------------------------------------------------------------------------------
def _check_totals(shown: str, size: int, files: int, limits: SourceLimits, *, verb: str) -> None:
    if files > limits.max_files:
        raise SourceTooLarge(f"source {shown} {verb} more than {limits.max_files} files ({FILES_CAP})", cap=FILES_CAP)
    if size > limits.max_bytes:
        raise SourceTooLarge(f"source {shown} {verb} past {_size(limits.max_bytes)} ({BYTES_CAP})", cap=BYTES_CAP)


def _size(n: int) -> str:
    """``512 MiB``, ``1.5 MiB``, ``300 KiB``, ``17 bytes``."""
    for unit, name in ((1024 * MiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{n} bytes"


def _empty(dest: Path) -> None:
    """Remove whatever a failed fetch wrote, keeping ``dest`` itself (an empty directory)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
