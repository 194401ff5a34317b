"""One bundle per order: its code, its manifest and its sops-encrypted secrets, as a gzip tar."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from lambda_runtime.schema.contract import BUNDLE_CODE_DIR, BUNDLE_MANIFEST, BUNDLE_SECRETS, Manifest


def build_bundle(manifest: Manifest, code_dir: Path, encrypted_secrets: bytes | None, out: Path) -> Path:
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        _add_bytes(tar, BUNDLE_MANIFEST, manifest.model_dump_json(indent=2).encode())
        if encrypted_secrets is not None:
            _add_bytes(tar, BUNDLE_SECRETS, encrypted_secrets)
        tar.add(code_dir, arcname=BUNDLE_CODE_DIR, recursive=True)
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))
