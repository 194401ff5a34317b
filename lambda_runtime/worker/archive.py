"""Tar safety: what the worker unpacks cannot land outside its destination, and what it packs
can be unpacked by the next order's worker under the same rules.

Bundles and input artifacts come from S3 objects a user's commands may have shaped (a
producer order chooses what its artifacts contain), so every archive is treated as hostile:
no absolute paths, no ``..``, no link leaving the destination, no device files.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Callable
from pathlib import Path

from lambda_runtime.schema.contract import BUNDLE_CODE_DIR, BUNDLE_MANIFEST, BUNDLE_SECRETS
from lambda_runtime.worker.errors import OrderFailure
from lambda_runtime.worker.log import OrderLog

TarFilter = Callable[[tarfile.TarInfo], tarfile.TarInfo | None]


# ---- paths -------------------------------------------------------------------------------------


def member_name(info: tarfile.TarInfo) -> str:
    """``./dist/`` and ``dist`` are the same member; ``..`` is kept so extraction can refuse it."""
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def is_under(name: str, rel: str) -> bool:
    return name == rel or name.startswith(rel + "/")


def relative_path(raw: str, what: str) -> str:
    rel = posixpath.normpath(raw.strip())
    if not raw.strip() or posixpath.isabs(rel) or rel in (".", "..") or rel.startswith("../"):
        raise OrderFailure(f"{what} {raw!r} must name something inside the working directory")
    return rel


# ---- unpacking ---------------------------------------------------------------------------------


def unpack_bundle(path: Path, code_dir: Path) -> tuple[bytes | None, bytes | None]:
    """Unpack the bundle's ``code/`` into ``code_dir`` and return its manifest and encrypted
    secrets (None when absent). ``code_dir`` is the boundary, so nothing in the bundle (not even
    a link) can reach the files next to it; anything else in the archive is ignored. Tar errors
    are the caller's to word."""
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()
        manifest = read_member(tar, members, BUNDLE_MANIFEST)
        secrets = read_member(tar, members, BUNDLE_SECRETS)
        safe_extract(tar, rebased(members, BUNDLE_CODE_DIR), code_dir, what="the bundle")
    return manifest, secrets


def extract_under(path: Path, rel: str, dest: Path, *, what: str) -> bool:
    """Unpack only the members at or below ``rel``; False (and nothing unpacked) if there are none."""
    with tarfile.open(path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if is_under(member_name(m), rel)]
        if not members:
            return False
        safe_extract(tar, members, dest, what=what)
    return True


def read_member(tar: tarfile.TarFile, members: list[tarfile.TarInfo], name: str) -> bytes | None:
    for info in members:
        if member_name(info) == name:
            if not info.isfile():
                raise OrderFailure(f"{name} in the order's bundle is not a regular file")
            handle = tar.extractfile(info)
            return handle.read() if handle is not None else b""
    return None


def rebased(members: list[tarfile.TarInfo], prefix: str) -> list[tarfile.TarInfo]:
    """The members under ``prefix/``, renamed relative to it (hard links too, which name members)."""
    out = []
    for info in members:
        name = member_name(info)
        if not name.startswith(prefix + "/"):
            continue
        renamed = name[len(prefix) + 1 :]
        if info.islnk():
            link = posixpath.normpath(info.linkname)
            if not link.startswith(prefix + "/"):
                raise OrderFailure(f"refused to unpack the bundle: hard link {name} points outside {prefix}/")
            out.append(info.replace(name=renamed, linkname=link[len(prefix) + 1 :], deep=False))
        else:
            out.append(info.replace(name=renamed, deep=False))
    return out


def safe_extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path, *, what: str) -> None:
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


# ---- packing -----------------------------------------------------------------------------------


def pack_artifacts(dest: Path, workdir: Path, declared: list[str], log: OrderLog) -> None:
    """Write the declared paths (relative to ``workdir``, already checked) to a gzip tar."""
    with tarfile.open(dest, "w:gz") as tar:
        for rel in outermost(declared):
            check_parents_inside(workdir, rel)
            tar.add(workdir / rel, arcname=rel, recursive=True, filter=artifact_filter(log))


def outermost(paths: list[str]) -> list[str]:
    """``dist`` and ``dist/app.txt`` both declared: archive ``dist`` once."""
    kept: list[str] = []
    for rel in sorted(set(paths), key=len):
        if not any(is_under(rel, parent) for parent in kept):
            kept.append(rel)
    return kept


def check_parents_inside(workdir: Path, rel: str) -> None:
    """A declared path reached through a symlinked directory would archive files from outside.
    (The path itself may be a link: it is stored as a link, not followed.)"""
    if not (workdir / rel).parent.resolve().is_relative_to(workdir.resolve()):
        raise OrderFailure(f"artifact {rel!r} leaves the working directory through a symlink")


def artifact_filter(log: OrderLog) -> TarFilter:
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
