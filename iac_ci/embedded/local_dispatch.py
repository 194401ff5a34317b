"""Workers as local subprocesses: what Lambda and CodeBuild do on AWS, done here.

The CodeBuild target runs the buildspec's exact command, in a fresh process per build, with
the payload in the environment variable StartBuild sets. The Lambda target hands the invoke
payload to a local execution environment (``lambda_env``) that stays warm between
invocations and is reused when idle, as Lambda reuses sandboxes. Workers get only what the
real ones would have: the AWS endpoint and credentials (sops needs KMS) and nothing of the
caller's environment.

``worker_user`` runs every worker process as that user (a uid; its gid is the same number
unless the user exists), as a Lambda sandbox runs everything as one unprivileged user: a
runner started as root still gets the protections that depend on the worker not being root
(undumpable processes, /proc closed to the commands). ``worker_python`` is then an interpreter
that user can execute; its directory comes first on the workers' PATH, so a ``python`` next to
it serves the buildspec command.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lambda_runtime.schema.contract import BUILDSPEC_COMMAND, PAYLOAD_ENV, WorkerPayload

LAMBDA_FUNCTION_TIMEOUT_S = 900


def _as_user(uid: int | None) -> dict[str, Any]:
    """Popen arguments that start the process as ``uid`` (no supplementary groups)."""
    if uid is None:
        return {}
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = uid
    return {"user": uid, "group": gid, "extra_groups": []}


class _LambdaEnv:
    """One warm execution environment: a process serving one invocation at a time."""

    def __init__(
        self, env: dict[str, str], log_path: Path | None, on_idle: Callable[[_LambdaEnv], None], *,
        python: str, uid: int | None,
    ) -> None:
        self.log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [python, "-m", "iac_ci.embedded.lambda_env"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
            text=True,
            bufsize=1,
            **_as_user(uid),
        )
        self.busy = False
        self._on_idle = on_idle
        threading.Thread(target=self._read, daemon=True).start()

    def invoke(self, request_id: str, body: str) -> None:
        assert self.proc.stdin is not None
        self.busy = True
        self.proc.stdin.write(
            json.dumps({"id": request_id, "event": json.loads(body), "timeout_s": LAMBDA_FUNCTION_TIMEOUT_S}) + "\n"
        )
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for _line in self.proc.stdout:
            self._on_idle(self)
        if self.log is not subprocess.DEVNULL:
            self.log.close()  # type: ignore[union-attr]


class LocalDispatcher:
    """``aws_env``, ``max_lambda_environments``, ``worker_user`` and ``worker_python`` may be changed
    until the first dispatch (the embedded stack builds its dispatcher before a test can pass them)."""

    def __init__(
        self, aws_env: dict[str, str], *, log_dir: Path | None = None, max_lambda_environments: int = 16,
        worker_user: int | None = None, worker_python: str = sys.executable,
    ):
        self.aws_env = aws_env
        self.max_lambda_environments = max_lambda_environments
        self.worker_user = worker_user
        self.worker_python = worker_python
        # async invocations beyond the concurrency limit wait, as Lambda queues throttled async invokes
        self._queued: deque[tuple[str, str, WorkerPayload]] = deque()
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._by_order: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._envs: list[_LambdaEnv] = []
        self._invocations = 0
        self._lock = threading.Lock()
        self.dispatched: list[tuple[str, str, str]] = []  # (run_id, order, target): what really started

    def _env(self) -> dict[str, str]:
        bindirs = dict.fromkeys([str(Path(self.worker_python).parent), str(Path(sys.executable).parent)])
        home = os.environ.get("HOME", "/tmp") if self.worker_user is None else tempfile.gettempdir()  # noqa: S108
        return {
            "PATH": ":".join([*bindirs, os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": home,
            "LANG": "C.UTF-8",
            **self.aws_env,
        }

    def dispatch(self, target: str, payload: WorkerPayload) -> str:
        if target == "lambda":
            return self._invoke(payload)
        env = self._env()
        body = payload.model_dump_json()
        out: int | IO[bytes] = subprocess.DEVNULL
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self._log_dir / f"{payload.run_id}-{payload.order}.out", "ab")  # noqa: SIM115
        env[PAYLOAD_ENV] = body
        proc = subprocess.Popen(
            ["bash", "-c", BUILDSPEC_COMMAND],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_user(self.worker_user),
        )
        if not isinstance(out, int):
            out.close()
        ref = f"local:{proc.pid}"
        with self._lock:
            self._procs[ref] = proc
            self._by_order[(payload.run_id, payload.order)] = proc
            self.dispatched.append((payload.run_id, payload.order, target))
        return ref

    def prewarm(self, count: int) -> int:
        """Start up to ``count`` idle environments now, as provisioned concurrency keeps them ready:
        the first orders then skip the cold start. Returns how many are ready or starting."""
        with self._lock:
            while len(self._envs) < min(count, self.max_lambda_environments):
                self._envs.append(self._new_env())
            return len(self._envs)

    def _new_env(self) -> _LambdaEnv:
        """(with the lock held)"""
        log = self._log_dir / f"lambda-env-{len(self._envs)}.out" if self._log_dir else None
        return _LambdaEnv(self._env(), log, self._idle, python=self.worker_python, uid=self.worker_user)

    def _invoke(self, payload: WorkerPayload) -> str:
        """An async invoke: a warm idle environment if there is one, else a new one (a cold start)."""
        with self._lock:
            self._envs = [e for e in self._envs if e.alive()]
            env = next((e for e in self._envs if not e.busy), None)
            if env is None and len(self._envs) < self.max_lambda_environments:
                env = self._new_env()
                self._envs.append(env)
            self._invocations += 1
            request_id = f"{payload.run_id}-{payload.order}-{self._invocations}"
            self.dispatched.append((payload.run_id, payload.order, "lambda"))
            if env is None:
                self._queued.append((request_id, payload.model_dump_json(), payload))
                return f"queued:{request_id}"
            return self._start(env, request_id, payload.model_dump_json(), payload)

    def _start(self, env: _LambdaEnv, request_id: str, body: str, payload: WorkerPayload) -> str:
        ref = f"local:{env.proc.pid}"
        env.invoke(request_id, body)
        self._procs[ref] = env.proc
        self._by_order[(payload.run_id, payload.order)] = env.proc
        return ref

    def _idle(self, env: _LambdaEnv) -> None:
        with self._lock:
            if self._queued and env.alive():
                self._start(env, *self._queued.popleft())
            else:
                env.busy = False

    def worker_pid(self, run_id: str, order: str) -> int | None:
        """The process that ran (or runs) the order: for ``lambda``, its execution environment's."""
        with self._lock:
            proc = self._by_order.get((run_id, order))
        return None if proc is None else proc.pid

    @property
    def environments(self) -> int:
        """How many Lambda environments were needed (cold starts)."""
        with self._lock:
            return len(self._envs)

    def stop(self, target: str, ref: str) -> None:
        with self._lock:
            if ref.startswith("queued:"):
                self._queued = deque(q for q in self._queued if q[0] != ref.removeprefix("queued:"))
                return
            proc = self._procs.get(ref)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def outcome(self, target: str, ref: str) -> str | None:
        """A local build's end as CodeBuild would report it: the worker process's exit status."""
        if target != "codebuild":
            return None
        with self._lock:
            proc = self._procs.get(ref)
        if proc is None:
            return "NOT_FOUND"
        code = proc.poll()
        return "IN_PROGRESS" if code is None else ("SUCCEEDED" if code == 0 else "FAILED")

    def kill(self, run_id: str, order: str) -> bool:
        """SIGKILL a worker's whole process group (tests: a worker that dies silently)."""
        with self._lock:
            proc = self._by_order.get((run_id, order))
        if proc is None or proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        return True

    def running(self) -> int:
        """Workers currently executing an order (busy Lambda environments and live builds)."""
        with self._lock:
            envs = {e.proc.pid for e in self._envs}
            builds = sum(1 for p in self._procs.values() if p.pid not in envs and p.poll() is None)
            return builds + sum(1 for e in self._envs if e.busy and e.alive())

    def reap(self) -> None:
        with self._lock:
            for p in self._procs.values():
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
