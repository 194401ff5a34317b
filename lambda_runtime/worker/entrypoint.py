"""CodeBuild entrypoint of the worker (and the embedded runner's local worker process).

StartBuild passes the payload as an environment-variable override, so the buildspec is one
fixed command; ``--event-file`` serves local runs that pipe the payload in. The exit code
tells CodeBuild's own status apart from the order's: 1 is an order that failed and was
reported, 3 means nobody will hear about this order from this worker (the watchdog will).

The payload's URLs and the build's credentials must stay out of the commands' reach. The
buildspec ``exec``s this process, so no shell above it keeps the payload in its environment;
this process reads the payload and erases it from its own environment block, holds its AWS
credentials in memory instead of its environment (``sops.hold_credentials``), becomes
undumpable, and claims the sandbox (``sandbox``). On CodeBuild it runs as root and the commands
as the image's unprivileged ``iac-ci-order`` (``sandbox.command_user``): the commands then can
read nothing of the root processes (the CodeBuild agent, this worker, sops), and cannot reach
the worker's own files.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from lambda_runtime import sops
from lambda_runtime.schema.contract import PAYLOAD_ENV
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.worker import sandbox
from lambda_runtime.worker.errors import PayloadError
from lambda_runtime.worker.hardening import erase_environment_variable, make_undumpable
from lambda_runtime.worker.runner import parse_payload, run_sandboxed

EXIT_SUCCEEDED = 0
EXIT_ORDER_FAILED = 1
EXIT_NOT_REPORTED = 3
EXIT_TERMINATED = 128 + signal.SIGTERM

logger = logging.getLogger("lambda_runtime.worker")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s iac-ci-worker: %(message)s"
    )
    try:
        payload = parse_payload(_read_payload(args.event_file))
    except (PayloadError, OSError) as exc:
        logger.error("%s", exc)
        return EXIT_NOT_REPORTED
    _stop_on_sigterm()
    make_undumpable()
    sops.hold_credentials()
    sandbox.claim("codebuild" if sandbox.on_codebuild() else "local")
    outcome = run_sandboxed(payload)
    run = outcome.run
    if not outcome.clean:
        logger.error("the sandbox could not be cleaned after the order; processes of it may still run")
    if not run.reported:
        return EXIT_NOT_REPORTED
    return EXIT_SUCCEEDED if run.result.status is OrderStatus.SUCCEEDED else EXIT_ORDER_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lambda_runtime.worker", description="Run one iac-ci order.")
    parser.add_argument(
        "--event-file",
        metavar="PATH",
        help=f"payload JSON file, '-' for stdin (default: the {PAYLOAD_ENV} environment variable)",
    )
    return parser


def _read_payload(event_file: str | None) -> str:
    if event_file == "-":
        return sys.stdin.read()
    if event_file:
        with open(event_file, encoding="utf-8") as handle:
            return handle.read()
    raw = os.environ.get(PAYLOAD_ENV)
    if not raw:
        raise PayloadError(f"no payload: pass --event-file or set {PAYLOAD_ENV}")
    erase_environment_variable(PAYLOAD_ENV)  # the URLs in it must not be readable by the commands
    return raw


def _stop_on_sigterm() -> None:
    """A stopped build (or a cancelled local worker) sends SIGTERM to this process only: the
    commands live in their own process group. Turning it into SystemExit lets the runner stop
    that group and report before exiting; a second SIGTERM is ignored so the report can finish."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(EXIT_TERMINATED)

    signal.signal(signal.SIGTERM, on_sigterm)
