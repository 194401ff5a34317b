"""Clean sandboxes: nothing an order starts outlives it.

Lambda reuses an execution environment for later invocations: ``/tmp`` persists, and processes an
invocation started are frozen with it and thawed in the next one. A process an order leaves
behind (``setsid``, a double fork, a daemon) would run during the next order, from any run:
read that order's secrets from ``/proc/<pid>/environ`` of its commands, rewrite its scripts
before they run. So a worker process that serves orders *claims* its sandbox (``claim``), once:

- it becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``), so an orphan below it is reparented
  to it rather than to init and stays among its descendants;
- when the commands end, ``kill_leftovers`` SIGKILLs every descendant, again and again until a
  scan of ``/proc`` finds none alive, reaping the zombies (before the artifacts are packed and
  the log is uploaded, which a leftover could otherwise still change);
- before and after every order, ``clean`` repeats that and, by kind of sandbox, also kills
  every process of the commands' uid that is not this process or one of its ancestors (on
  Lambda the worker's own uid: a sandbox holds the runtime and nothing else, this image ships no
  extensions; on CodeBuild the dedicated command user's) and, on Lambda, empties ``/tmp``.
  The uid sweep is never done for uid 0, nor for a ``local`` claim (the embedded runner and
  tests), where the same uid runs the test runner and everything else.

Processes are signalled through a pidfd checked against the start time read from ``/proc``, so a
pid reused in between is never hit.

Why a sweep per order and not a fresh execution environment per order: raising from the
handler does not give one (the runtime reports the error and serves the next invocation in the
same sandbox, processes included); only the runtime process exiting makes Lambda reset the
environment. Doing that after every order would make every order a cold start, and would record
every order as a failed invocation (``Runtime.ExitError``): a message on the worker's failure
destination and a point on its Errors metric each time. The cold start is the image's Init
(importing this handler in a fresh interpreter: 0.2 s measured here) plus Lambda's own sandbox
start (commonly several hundred milliseconds to seconds for a container image). The sweep, as
measured by ``sweep_cost_seconds`` (everything an order's cleaning scans, both ``clean``s and the
``kill_leftovers``), costs 0.55 ms per order with one process in the table (a PID namespace, like a
sandbox) and 6-7 ms with the 84 processes of the test machine (about 0.07 ms per process). A Lambda
sandbox has a handful, so that is well under a millisecond. So the worker sweeps, and retires the
environment (``retire``) only when a sweep cannot prove it clean: a process that survived SIGKILL
(uninterruptible sleep, or one that left the uid) or a path in ``/tmp`` that cannot be removed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NoReturn

from lambda_runtime.worker.hardening import set_child_subreaper

COMMAND_USER = "iac-ci-order"  # created in the image (iac_ci_constructs/assets/Dockerfile)
COMMAND_USER_ENV = "IAC_CI_COMMAND_USER"
KILL_DEADLINE_SECONDS = 5.0
POLL_SECONDS = 0.005
RETIRE_EXIT_CODE = 86
LAMBDA_TMP = Path("/tmp")  # the only writable path of a Lambda sandbox  # noqa: S108

SandboxKind = Literal["lambda", "codebuild", "local"]


class SandboxError(RuntimeError):
    """The commands cannot be run safely here (the message says why)."""


@dataclass(frozen=True)
class CommandUser:
    """The unprivileged user a root worker runs the commands as."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Sweep:
    """What a sweep did: processes killed, those still alive at its deadline, paths it could not remove."""

    killed: int = 0
    survivors: tuple[int, ...] = ()
    stuck_paths: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.survivors and not self.stuck_paths

    def __add__(self, other: Sweep) -> Sweep:
        return Sweep(self.killed + other.killed, self.survivors + other.survivors,
                     self.stuck_paths + other.stuck_paths, self.seconds + other.seconds)

    def describe(self) -> str:
        parts = []
        if self.survivors:
            parts.append(f"{len(self.survivors)} process(es) still alive after SIGKILL (pids "
                         + ", ".join(map(str, self.survivors[:10])) + ")")
        if self.stuck_paths:
            parts.append(f"{len(self.stuck_paths)} path(s) that could not be removed ("
                         + ", ".join(self.stuck_paths[:5]) + ")")
        return "; ".join(parts) or "clean"


@dataclass
class _Claim:
    kind: SandboxKind
    subreaper: bool
    tainted: list[str] = field(default_factory=list)


_claim: _Claim | None = None


# ---- where the worker runs ---------------------------------------------------------------------


def on_lambda(environ: Mapping[str, str] = os.environ) -> bool:
    """The real Lambda runtime: both variables are set by Lambda itself, never by the embedded runner."""
    return bool(environ.get("AWS_LAMBDA_FUNCTION_NAME") and environ.get("AWS_LAMBDA_RUNTIME_API"))


def on_codebuild(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get("CODEBUILD_BUILD_ID"))


def claim(kind: SandboxKind) -> None:
    """Make this process the keeper of its sandbox (idempotent): only a process that serves
    orders and nothing else may claim, since every descendant it has is killed after each order."""
    global _claim
    if _claim is None:
        _claim = _Claim(kind=kind, subreaper=set_child_subreaper())


def claimed() -> bool:
    return _claim is not None


def command_user(environ: Mapping[str, str] = os.environ) -> CommandUser | None:
    """Who runs the commands when that is not the worker's own user.

    On CodeBuild the worker runs as root (the build container's default) and the commands as
    ``iac-ci-order``, so they can read nothing of the root processes (the buildspec shell, the
    CodeBuild agent, this worker, sops) and cannot touch the worker's files. Elsewhere only when
    ``IAC_CI_COMMAND_USER`` (a name or a uid) asks for it. Never root; a user that cannot be
    switched to is an error, not a quiet fallback to running as the worker."""
    requested = environ.get(COMMAND_USER_ENV, "").strip()
    if not requested and not on_codebuild(environ):
        return None
    user = _lookup(requested or COMMAND_USER)
    if user.uid == 0:
        raise SandboxError(f"{COMMAND_USER_ENV} names root; the commands never run as root")
    if os.geteuid() != 0:
        if os.geteuid() == user.uid:
            return None  # already that user
        raise SandboxError(f"the commands are to run as {user.name} (uid {user.uid}), which needs a worker running "
                           "as root")
    return user


def _lookup(spec: str) -> CommandUser:
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        if spec.isdigit():
            return CommandUser(name=spec, uid=int(spec), gid=int(spec))
        raise SandboxError(f"no user {spec!r} to run the commands as (the image creates {COMMAND_USER})") from None
    return CommandUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


# ---- cleaning ----------------------------------------------------------------------------------


def kill_leftovers(*, spare: Collection[int] = ()) -> Sweep:
    """Right after the commands: every descendant of a claimed worker (``spare``: pids not to
    signal or reap, e.g. the script's shell, which its Popen still has to reap). Does nothing
    in a process that has not claimed its sandbox: killing all descendants of, say, a test
    runner would hit much more than an order's processes."""
    if _claim is None:
        return Sweep()
    sweep = kill_descendants(spare=spare)
    if sweep.survivors:
        _claim.tainted.append(sweep.describe())
    return sweep


def clean() -> Sweep:
    """Before and after each order: descendants, the uid sweep and ``/tmp`` as the sandbox's kind
    calls for (see the module's docstring). ``clean`` is False if anything stayed, or if an
    earlier ``kill_leftovers`` left a survivor; the caller then retires the environment."""
    if _claim is None:
        return Sweep()
    started = time.monotonic()
    sweep = kill_descendants()
    for uid in _sweep_uids(_claim.kind):
        sweep += kill_user_processes(uid)
    if _claim.kind == "lambda":
        sweep += Sweep(stuck_paths=clear_directory(LAMBDA_TMP))
    if _claim.tainted:
        sweep += Sweep(stuck_paths=tuple(f"<earlier: {t}>" for t in _claim.tainted))
    return replace(sweep, seconds=time.monotonic() - started)


def retire() -> NoReturn:
    """End the execution environment: the runtime process exits, and Lambda resets the sandbox
    before the next invocation (a new Init). Raising from the handler would not: the runtime
    reports the error and keeps serving invocations in the same sandbox."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(RETIRE_EXIT_CODE)


def _sweep_uids(kind: SandboxKind) -> list[int]:
    uids: list[int] = []
    if kind == "lambda":
        uids.append(os.getuid())
    elif kind == "codebuild":
        try:
            user = command_user()
        except SandboxError:
            user = None
        if user is not None:
            uids.append(user.uid)
    return [uid for uid in uids if uid != 0]


# ---- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    starttime: int


def process_table() -> dict[int, Proc]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = _read(int(entry.name))
            if proc is not None:
                table[proc.pid] = proc
    return table


def _read(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain anything, ")" included
    return Proc(pid=pid, ppid=int(fields[1]), state=fields[0], starttime=int(fields[19]))


def _uids(pid: int) -> set[int]:
    """Real, effective and saved uid (what kill(2) compares): /proc/<pid>/status is readable even
    for a process that made itself undumpable, whose /proc entries then belong to root."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return {int(v) for v in line.split()[1:4]}
    except OSError:
        pass
    return set()


def descendants(table: Mapping[int, Proc], root: int) -> list[Proc]:
    children: dict[int, list[Proc]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child.pid != root:
                found.append(child)
                todo.append(child.pid)
    return found


def ancestors(table: Mapping[int, Proc], pid: int) -> set[int]:
    seen: set[int] = set()
    while pid in table and pid not in seen:
        seen.add(pid)
        pid = table[pid].ppid
    seen.add(pid)
    return seen


def kill_descendants(*, spare: Collection[int] = (), deadline_seconds: float = KILL_DEADLINE_SECONDS) -> Sweep:
    """SIGKILL every descendant of this process until none is alive, reaping those that are its children."""
    me = os.getpid()
    return _kill_until_gone(lambda table: [p for p in descendants(table, me) if p.pid not in spare],
                            deadline_seconds)


def kill_user_processes(uid: int, *, deadline_seconds: float = KILL_DEADLINE_SECONDS) -> Sweep:
    """SIGKILL every process of ``uid`` that is neither this process nor one of its ancestors."""
    if uid == 0:
        raise ValueError("refusing to kill every process of root")
    me = os.getpid()

    def select(table: Mapping[int, Proc]) -> list[Proc]:
        keep = ancestors(table, me)
        return [p for p in table.values() if p.pid not in keep and uid in _uids(p.pid)]

    return _kill_until_gone(select, deadline_seconds)


def _kill_until_gone(select: Callable[[Mapping[int, Proc]], list[Proc]], deadline_seconds: float) -> Sweep:
    me = os.getpid()
    started = time.monotonic()
    killed: set[int] = set()
    while True:
        targets = select(process_table())
        living = [p for p in targets if p.state not in ("Z", "X")]
        for proc in living:
            if _kill(proc):
                killed.add(proc.pid)
        _reap(p.pid for p in targets if p.ppid == me)
        elapsed = time.monotonic() - started
        if not living:
            return Sweep(killed=len(killed), seconds=elapsed)
        if elapsed > deadline_seconds:
            return Sweep(killed=len(killed), survivors=tuple(sorted(p.pid for p in living)), seconds=elapsed)
        time.sleep(POLL_SECONDS)


def _kill(proc: Proc) -> bool:
    """SIGKILL exactly the process that was read: a pidfd pins it, its start time tells a reused pid apart."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd (kernel < 5.3): the start-time check narrows the race
        fd = None
    try:
        again = _read(proc.pid)
        if again is None or again.starttime != proc.starttime:
            return False
        if fd is None:
            os.kill(proc.pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):  # gone, or no longer ours to signal (it stays a survivor)
        return False
    finally:
        if fd is not None:
            os.close(fd)


def _reap(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


# ---- files -------------------------------------------------------------------------------------


def clear_directory(root: Path) -> tuple[str, ...]:
    """Remove everything inside ``root`` (not ``root`` itself), also what an order made unwritable
    or unreadable for itself; returns the paths that stayed."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return ()
    stuck = []
    for entry in entries:
        path = entry.path
        try:
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(path)
            else:
                os.unlink(path)
        except OSError:
            pass  # judged by what is left below
        if os.path.lexists(path):
            stuck.append(path)
    return tuple(stuck)


def _remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    os.chmod(path, 0o700)  # give every directory back to its owner (us), top down, then again
    for dirpath, dirnames, _files in os.walk(path):
        for name in dirnames:
            sub = os.path.join(dirpath, name)
            if not os.path.islink(sub):
                try:
                    os.chmod(sub, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)


# ---- the cost, for the benchmark ---------------------------------------------------------------


def sweep_cost_seconds(rounds: int = 200) -> float:
    """Seconds the sandbox cleaning costs one order on Lambda (``clean`` before and after it, plus
    ``kill_leftovers`` after its commands), measured without killing anything: the descendant
    walk of this process, the uid sweep for a uid without processes (every process's status is
    read, none matches) and emptying an empty directory. Scales with the process table."""
    unused_uid = 2_000_000_000
    with tempfile.TemporaryDirectory(prefix="iac-ci-sweep-") as empty:
        started = time.perf_counter()
        me = os.getpid()
        for _ in range(rounds):
            for _ in range(3):
                descendants(process_table(), me)  # kill_descendants' scan, which finds nothing to kill
            for _ in range(2):
                kill_user_processes(unused_uid)
                clear_directory(Path(empty))
        return (time.perf_counter() - started) / rounds
