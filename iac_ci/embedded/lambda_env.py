"""A local Lambda execution environment: import the worker handler once, then serve
invocations one at a time, as a warm Lambda sandbox does.

Reusing the process is what Lambda does between invocations, so running orders through it
also checks the property the worker promises there: nothing of one invocation (processes,
files, environment, log keys) is left for the next. The environment claims its sandbox as
the Lambda handler does on AWS (``enter_sandbox``), except for the uid sweep and emptying
/tmp, which here would hit everything else the user runs.

Protocol: one JSON request per line on stdin, ``{"id", "event", "timeout_s"}``; one JSON
line per finished invocation on the original stdout, ``{"id", "ok"}``. The handler's own
output goes to stderr, as a function's output goes to its log.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from types import FrameType


class LocalContext:
    """The parts of the Lambda context object the runtime uses."""

    function_name = "iac-ci-worker"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:iac-ci-worker"

    def __init__(self, timeout_s: float):
        self._deadline = time.monotonic() + timeout_s
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the handler's stdout is the function's log

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)  # the worker stops its command group and reports first

    signal.signal(signal.SIGTERM, on_sigterm)
    from lambda_runtime.worker.handler import enter_sandbox, handler  # the cold start, paid once

    enter_sandbox("local")

    for line in sys.stdin:
        request = json.loads(line)
        ok = True
        try:
            handler(request["event"], LocalContext(float(request["timeout_s"])))
        except Exception:  # an invocation error, as Lambda reports it; the sandbox lives on
            ok = False
        proto.write(json.dumps({"id": request["id"], "ok": ok}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
