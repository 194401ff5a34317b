"""Zip bombs built for real: deflated zeros, and copies whose headers lie about their sizes."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

MiB = 1024 * 1024


def zeros_zip(path: Path, size: int, *, name: str = "zeros.bin") -> Path:
    """A real zip bomb: ``size`` bytes of zeros, deflated (about 1 KiB per MiB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open(name, "w") as out:
        chunk = bytes(MiB)
        for _ in range(size // MiB):
            out.write(chunk)
    return path


def lie_about_sizes(path: Path, declared: int) -> Path:
    """Patch every local and central header of ``path`` to declare ``declared`` uncompressed bytes."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            struct.pack_into("<L", data, info.header_offset + 22, declared)  # local header: uncompressed size
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        struct.pack_into("<L", data, at + 24, declared)  # central directory entry: uncompressed size
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path
