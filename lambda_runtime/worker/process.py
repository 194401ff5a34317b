"""Process supervision: the order's script runs in a process group of its own, so a time limit
or a stopped worker ends every process the commands started, not just the shell.

The group id is the shell's pid, which stays ours only until the shell is reaped; every wait
here therefore looks without reaping (WNOWAIT), and the final SIGKILL goes out before the reap.
A process that left the group (``setsid``, ``setpgid``) is still a descendant of a worker that
claimed its sandbox (a child subreaper): ``sandbox.kill_leftovers`` ends those right after the
group, before anything the order produced is packed or uploaded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lambda_runtime.worker import sandbox
from lambda_runtime.worker.log import LINE_CAP_BYTES, OrderLog
from lambda_runtime.worker.sandbox import CommandUser

POLL_SECONDS = 0.05
READER_JOIN_SECONDS = 5.0
INTERRUPT_GRACE_CAP_SECONDS = 5.0


@dataclass(frozen=True)
class ScriptExit:
    """How the script ended: ``returncode`` is Popen's (negative for a signal)."""

    returncode: int
    timed_out: bool


def run_script(
    script: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: OrderLog,
    limit: float,
    source: str,
    kill_grace_seconds: int,
    user: CommandUser | None = None,
) -> ScriptExit:
    """Run ``script`` with bash, its output going line by line to ``log``; past ``limit`` seconds
    (``source`` names where the limit comes from) the group gets SIGTERM, then SIGKILL after
    ``kill_grace_seconds``. An interrupt of the worker itself (SystemExit on SIGTERM) still
    stops the group, with a shorter grace, before it propagates. ``user``: run as that user
    (uid, gid, no supplementary groups) instead of the worker's."""
    proc = subprocess.Popen(
        [shutil.which("bash") or "/bin/bash", str(script)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        user=None if user is None else user.uid,
        group=None if user is None else user.gid,
        extra_groups=None if user is None else [],
    )
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=pump, args=(stdout, log), name="iac-ci-output", daemon=True)
    timed_out = False
    finished = False
    try:
        # started inside the guard: an interrupt arriving while the thread starts (its start waits,
        # and a signal handler runs then) must still stop the group
        reader.start()
        if not wait_exit(proc.pid, limit):
            timed_out = True
            log.note(
                f"time limit of {limit:.0f}s reached ({source}); sending SIGTERM, SIGKILL after {kill_grace_seconds}s"
            )
            if not terminate_group(proc.pid, reader, kill_grace_seconds):
                log.note(f"still running {kill_grace_seconds}s after SIGTERM; sending SIGKILL")
        finished = True
    finally:
        if not finished:  # interrupted (SIGTERM to the worker): still stop the commands first
            terminate_group(proc.pid, reader, min(kill_grace_seconds, INTERRUPT_GRACE_CAP_SECONDS))
        signal_group(proc.pid, signal.SIGKILL)  # leftovers too; before reaping, so the id cannot be reused
        _kill_leftovers(proc.pid, log)
        proc.wait()
        if reader.ident is not None:  # started (an interrupt may have come before)
            reader.join(READER_JOIN_SECONDS)
        if reader.is_alive():
            log.note("a process that left the process group still holds the output open; ignoring it")
        else:
            stdout.close()
    return ScriptExit(proc.returncode, timed_out)


def _kill_leftovers(shell: int, log: OrderLog) -> None:
    """Whatever left the group (the shell itself is spared: its Popen reaps it)."""
    leftovers = sandbox.kill_leftovers(spare=(shell,))
    if leftovers.killed:
        log.note(f"killed {leftovers.killed} process(es) the commands left running outside their process group")
    if leftovers.survivors:
        log.note(f"{leftovers.describe()}; this execution environment will not run another order")


def pump(stream: BinaryIO, log: OrderLog) -> None:
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


def has_exited(pid: int) -> bool:
    """Exited but not reaped (WNOWAIT): the process group id stays ours until we reap the leader."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait_exit(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not has_exited(pid):
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL_SECONDS, left))
    return True


def terminate_group(pgid: int, reader: threading.Thread, grace: float) -> bool:
    """SIGTERM everyone, then wait until the shell is gone and nobody holds the output (the
    closest portable sign that the whole tree exited); the caller sends SIGKILL after.
    Returns whether they all went within the grace period."""
    signal_group(pgid, signal.SIGTERM)
    end = time.monotonic() + grace
    while True:
        if has_exited(pgid) and not reader.is_alive():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(POLL_SECONDS)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
