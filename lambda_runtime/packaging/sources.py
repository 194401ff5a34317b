"""Fetching an order's code: a git ref, an S3 zip, or (embedded mode) a local directory.

Each distinct source is fetched once per run. Git fetches the exact ref or commit asked for
(a shallow fetch of that object, not of the default branch). Tokens reach git through its
environment-config mechanism, never argv, and are masked out of every error.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.job.model import GitSource, PathSource, S3Source, Source
from lambda_runtime.masking import Masker, redact_credentials
from lambda_runtime.packaging.credentials import PERMANENT_CODES, CredentialResolver
from lambda_runtime.packaging.errors import PackagingError

GIT_TIMEOUT = 600
IGNORED = shutil.ignore_patterns(".git")


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
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if source is None:
        return
    if isinstance(source, GitSource):
        token = resolver.resolve(source.git.token) if source.git.token else None
        fetch_git(source.git.url, source.git.ref or default_ref, dest, token=token)
    elif isinstance(source, S3Source):
        fetch_s3_zip(clients, source.s3, dest)
    elif isinstance(source, PathSource):
        src = Path(source.path)
        if not src.is_dir():
            raise PackagingError(f"source path '{source.path}' is not a directory")
        shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True, ignore=IGNORED)


def fetch_git(url: str, ref: str | None, dest: Path, *, token: str | None = None) -> str:
    """Fetch ``ref`` (branch, tag or commit; default HEAD) of ``url`` into ``dest``; return the commit."""
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

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=dest, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT)
        if proc.returncode != 0:
            detail = masker.mask(redact_credentials(proc.stderr.strip()))[-1500:]
            raise PackagingError(f"git {args[0]} of {redact_credentials(url)} failed: {detail}")
        return proc.stdout

    git("init", "-q")
    git("remote", "add", "origin", url)
    want = ref or "HEAD"
    try:
        git("fetch", "-q", "--depth", "1", "origin", want)
    except PackagingError:
        # servers that refuse fetching a bare commit id: fetch everything, then resolve it
        git("fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
        git("update-ref", "FETCH_HEAD", git("rev-parse", "--verify", want + "^{commit}").strip())
    git("checkout", "-q", "--detach", "FETCH_HEAD")
    commit = git("rev-parse", "HEAD").strip()
    shutil.rmtree(dest / ".git", ignore_errors=True)
    return commit


def fetch_s3_zip(clients: AwsClients, uri: str, dest: Path) -> None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        body = clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        if error_code(exc) in PERMANENT_CODES | {"NoSuchKey", "NoSuchBucket", "403", "404"}:
            raise PackagingError(f"source {uri} could not be read ({error_code(exc)})") from None
        raise
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except zipfile.BadZipFile:
        raise PackagingError(f"source {uri} is not a zip file") from None
    root = dest.resolve()
    for info in archive.infolist():
        name = PurePosixPath(info.filename)
        target = (dest / name).resolve()
        if name.is_absolute() or ".." in name.parts or not target.is_relative_to(root):
            raise PackagingError(f"source {uri} contains an unsafe path '{info.filename}'")
    archive.extractall(dest)
