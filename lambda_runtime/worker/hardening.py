"""Keeping the worker's capabilities away from the commands it runs.

On Lambda the commands run as the same user as the worker; on CodeBuild the worker runs as
root and the commands as an unprivileged user (``sandbox.command_user``). What the worker
holds that they must not have: the presigned result URL (a command could report its own
"succeeded") and the function's or project's credentials. Both would be readable through
``/proc/<worker pid>/environ`` (the *original* environment block: ``os.environ`` is a copy,
and unsetting a variable does not erase the block), ``/proc/<worker pid>/mem`` and
``/proc/<worker pid>/fd``.
"""
from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def erase_environment_variable(name: str) -> bool:
    """Overwrite the value in the process's original environment block, then drop it.

    Returns True when the original bytes were found and zeroed.
    """
    erased = False
    libc = _libc()
    if libc is not None:
        prefix = name.encode() + b"="
        environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
        i = 0
        while environ[i] is not None:
            entry = environ[i]
            if entry.startswith(prefix):
                address = ctypes.cast(environ, ctypes.POINTER(ctypes.c_void_p))[i]
                ctypes.memset(address + len(prefix), 0, len(entry) - len(prefix))
                erased = True
            i += 1
    os.environ.pop(name, None)
    return erased


def make_undumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: other processes of the same (non-root) user can no longer
    read this process's memory or environment, nor open its files, through /proc (``environ``,
    ``mem``, ``fd/<n>``; ptrace is refused too). Children exec'ing a program get the default
    back, so the commands themselves are unaffected."""
    libc = _libc()
    if libc is None:
        return False
    return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0


def erase_environment_variables(names: Iterable[str]) -> list[str]:
    """``erase_environment_variable`` for each name; returns the names whose original bytes were zeroed."""
    return [name for name in names if erase_environment_variable(name)]


def set_child_subreaper() -> bool:
    """``prctl(PR_SET_CHILD_SUBREAPER, 1)``: a process orphaned below this one (``setsid``, a double
    fork) is reparented to it instead of to init, so it stays among this process's descendants,
    where ``sandbox.kill_descendants`` finds it."""
    libc = _libc()
    if libc is None:
        return False
    return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
