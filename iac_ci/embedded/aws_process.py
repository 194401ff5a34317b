"""The embedded AWS in a process of its own: ``python -m iac_ci.embedded.aws_process``.

moto answers every request in Python. In the engine's process it shared one interpreter lock
with the orchestrator, the pumps and the workers' bookkeeping, so on a 2-core machine the
emulated services and the engine took turns. In a process of its own it runs beside them; every
call still goes over real HTTP to the same APIs.

The parent talks to it over the child's stdin and stdout, one JSON line each way: the first
line out is ``{"endpoint": ...}``; ``calls`` and ``reset`` read or clear the request counter
(``--count-calls``). The end of stdin ends the process, so an ``iac-ci run`` that is killed
leaves no server behind; it runs in a session of its own so that a Ctrl-C meant for the run
(which cancels it through the API) does not take the API away first.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import IO, Any

from iac_ci.embedded.calls import CallCounter, CallCounts


class AwsProcess:
    """The parent's side: the child process, its endpoint once it is up, and its counter."""

    def __init__(self, proc: subprocess.Popen[str], stderr: IO[bytes], endpoint_url: str) -> None:
        self._proc = proc
        self._stderr = stderr  # a temporary file: what the child said if it fails to come up
        self.endpoint_url = endpoint_url
        self._ready = False
        self._lock = threading.Lock()

    @classmethod
    def spawn(cls, *, count_calls: bool = False) -> AwsProcess:
        """The port is chosen here, so the caller can build its clients while the server starts."""
        port = free_port()
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "iac_ci.embedded.aws_process", "--port", str(port),
             *(["--count-calls"] if count_calls else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1, env=env,
            start_new_session=True,
        )
        return cls(proc, stderr, f"http://127.0.0.1:{port}")

    def wait_ready(self, timeout: float) -> None:
        if not self._ready:
            greeting = self._request(None, timeout)
            if greeting.get("endpoint") != self.endpoint_url:
                raise RuntimeError(f"the embedded AWS did not start: {greeting.get('error') or greeting}")
            self._ready = True

    def calls(self) -> CallCounts:
        return CallCounts.from_json(self._request("calls", 30))

    def reset_calls(self) -> None:
        self._request("reset", 30)

    def _request(self, command: str | None, timeout: float) -> dict[str, Any]:
        """Send ``command`` (None: only read the greeting) and read the one line that answers it."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            if command is not None:
                self._proc.stdin.write(command + "\n")
                self._proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while True:
                ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if ready:
                    line = self._proc.stdout.readline()
                    if line:
                        answer: dict[str, Any] = json.loads(line)
                        return answer
                if not ready and time.monotonic() < deadline:
                    continue
                raise RuntimeError(f"the embedded AWS did not answer{'' if command is None else ' ' + command}: "
                                   f"{self._said()}")

    def _said(self) -> str:
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        code = self._proc.poll()
        return (f"exited {code}: " if code is not None else "") + (tail or "no output")

    def stop(self) -> None:
        """Close its stdin (it exits at once); kill it if it has not gone within a second."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# One cheap request per service the engine uses: moto builds each service's application (and
# imports its backend) on its first request, 50-300 ms each, which would otherwise land on the
# engine's first calls. Not SSM: its first request loads AWS's public parameters (over a second),
# and a run needs it only when an order names a parameter.
# (service in the credential scope, method, path, X-Amz-Target, body)
_WARM_UP = (
    ("dynamodb", "POST", "/", "DynamoDB_20120810.ListTables", "{}"),
    ("sqs", "POST", "/", "AmazonSQS.ListQueues", "{}"),
    ("kms", "POST", "/", "TrentService.ListKeys", "{}"),
    ("secretsmanager", "POST", "/", "secretsmanager.ListSecrets", "{}"),
    ("states", "POST", "/", "AWSStepFunctions.ListStateMachines", "{}"),
    ("events", "POST", "/", "AWSEvents.ListEventBuses", "{}"),
    ("scheduler", "GET", "/schedule-groups", "", ""),
    ("s3", "GET", "/", "", ""),
)


def warm_up(endpoint: str) -> None:
    """Touch every service once, then load the state-machine interpreter (slow to import)."""
    for service, method, path, target, body in _WARM_UP:
        headers = {"Authorization": f"AWS4-HMAC-SHA256 Credential=embedded/20260101/us-east-1/{service}/aws4_request, "
                                    "SignedHeaders=host, Signature=0"}
        if target:
            headers |= {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"}
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint + path, data=body.encode() if body else None,
                                                          headers=headers, method=method), timeout=30).read()
        except OSError:
            pass  # a warm-up only: the real call will say what is wrong
    import moto.stepfunctions.parser.models  # noqa: F401  (the ASL parser: over a second to import)


def main(argv: list[str]) -> int:
    from iac_ci.embedded.server import start_moto

    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
    counter = CallCounter() if "--count-calls" in argv else None
    if counter is not None:
        counter.install()
    out = sys.stdout
    lock = threading.Lock()

    def say(answer: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(answer) + "\n")
            out.flush()

    # stdin is watched before anything can hang (moto waits forever for a server thread whose port
    # was taken): whatever happens here, the end of stdin ends the process
    threading.Thread(target=_serve_commands, args=(counter, say), daemon=True, name="commands").start()
    try:
        _server, endpoint = start_moto(port)
    except Exception as exc:  # the port was taken meanwhile, most likely: say so on the protocol line
        say({"error": f"{type(exc).__name__}: {exc}"})
        threading.Event().wait()  # until the parent closes stdin
    threading.Thread(target=warm_up, args=(endpoint,), daemon=True, name="warm-up").start()
    say({"endpoint": endpoint})
    threading.Event().wait()
    return 0


def _serve_commands(counter: CallCounter | None, say: Callable[[dict[str, Any]], None]) -> None:
    for line in sys.stdin:
        command = line.strip()
        if command == "calls" and counter is not None:
            say(counter.snapshot().to_json())
        elif command == "reset" and counter is not None:
            counter.reset()
            say({})
        else:
            say({"error": f"unknown command {command!r}"})
    os._exit(0)  # stdin closed: the parent is done (or gone); moto's threads are not waited for


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
