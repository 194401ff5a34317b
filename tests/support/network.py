"""Whether the package index is reachable: the image and wheel-install tests resolve real
dependencies from it, and skip (saying why) on a machine without it."""

from __future__ import annotations

import socket

INDEX_HOST = "pypi.org"


def package_index_reachable() -> bool:
    try:
        socket.create_connection((INDEX_HOST, 443), timeout=5).close()
        return True
    except OSError:
        return False
