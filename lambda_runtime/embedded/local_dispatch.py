"""Workers as local subprocesses: what Lambda and CodeBuild do on AWS, done here.

The CodeBuild target runs the buildspec's exact command with the payload in the same
environment variable StartBuild sets; the Lambda target feeds the invoke payload to the
handler. Workers get only what the real ones would have: the AWS endpoint and credentials
(sops needs KMS) and nothing of the caller's environment.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from lambda_runtime.schema.contract import WorkerPayload
from lambda_runtime.worker.entrypoint import BUILDSPEC_COMMAND, PAYLOAD_ENV


class LocalDispatcher:
    def __init__(self, aws_env: dict[str, str], *, log_dir: Path | None = None):
        self._aws_env = aws_env
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._by_order: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self.dispatched: list[tuple[str, str, str]] = []  # (run_id, order, target): what really started

    def _env(self) -> dict[str, str]:
        bindir = str(Path(sys.executable).parent)
        return {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/tmp"),
                "LANG": "C.UTF-8", **self._aws_env}

    def dispatch(self, target: str, payload: WorkerPayload) -> str:
        env = self._env()
        body = payload.model_dump_json()
        out = subprocess.DEVNULL
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self._log_dir / f"{payload.run_id}-{payload.order}.out", "ab")  # noqa: SIM115
        if target == "codebuild":
            env[PAYLOAD_ENV] = body
            proc = subprocess.Popen(["bash", "-c", BUILDSPEC_COMMAND], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        else:
            proc = subprocess.Popen([sys.executable, "-m", "lambda_runtime.worker", "--event-file", "-"], env=env,
                                    stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            assert proc.stdin is not None
            proc.stdin.write(body.encode())
            proc.stdin.close()
        if out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
        ref = f"local:{proc.pid}"
        with self._lock:
            self._procs[ref] = proc
            self._by_order[(payload.run_id, payload.order)] = proc
            self.dispatched.append((payload.run_id, payload.order, target))
        return ref

    def stop(self, target: str, ref: str) -> None:
        with self._lock:
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

    def kill(self, run_id: str, order: str) -> bool:
        """SIGKILL a worker's whole process group (tests: a worker that dies silently)."""
        with self._lock:
            proc = self._by_order.get((run_id, order))
        if proc is None or proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        return True

    def running(self) -> int:
        with self._lock:
            return sum(1 for p in self._procs.values() if p.poll() is None)

    def reap(self) -> None:
        with self._lock:
            for p in self._procs.values():
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
