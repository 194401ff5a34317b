"""Run one order: fetch its bundle, run its commands, publish artifacts, report the result.

The same code runs inside the Lambda handler and the CodeBuild entrypoint, so an order
behaves identically on both targets. Everything the worker is given (bundle, inputs, the
places to write log/result/artifacts) arrives as presigned URLs: the worker itself needs no
AWS permissions beyond KMS for sops, and those URLs never reach the commands' environment or
disk, so a command cannot forge its own result or read another order's data. While the
commands run, the log so far is re-uploaded as the order's live log (``worker.live``), from this
process too.

Every order ends in a reported result, whatever went wrong, because the orchestrator only
moves on when a result object appears (or the watchdog writes one much later).

A worker process that serves orders runs each through ``run_sandboxed``: the sandbox is
cleaned before and after it (``sandbox``), and on CodeBuild the commands run as an
unprivileged user while the worker keeps root for its own files and uploads.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from lambda_runtime.masking import Masker, redact_credentials
from lambda_runtime.schema.contract import BUNDLE_CODE_DIR, Manifest, OrderResult, WorkerPayload
from lambda_runtime.schema.status import SUCCESSES, OrderStatus
from lambda_runtime.worker import sandbox
from lambda_runtime.worker.archive import pack_artifacts, relative_path
from lambda_runtime.worker.errors import OrderFailure, PayloadError, TransferError
from lambda_runtime.worker.live import LivePolicy, LivePublisher
from lambda_runtime.worker.log import OrderLog
from lambda_runtime.worker.prepare import Prepared, payload_urls, prepare, validation_summary
from lambda_runtime.worker.process import run_script
from lambda_runtime.worker.sandbox import CommandUser
from lambda_runtime.worker.transfer import http_put

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000
# ``terraform plan -detailed-exitcode``: changes present; a ``drift: true`` order reports drift, not failure
DRIFT_EXIT_CODE = 2


@dataclass(frozen=True)
class WorkerRun:
    """``execute_order``'s result plus whether it reached S3: the CodeBuild exit code needs both."""

    result: OrderResult
    reported: bool


@dataclass(frozen=True)
class SandboxedRun:
    """``run_sandboxed``'s result: the order's, and whether the sandbox may serve another order."""

    run: WorkerRun
    clean: bool


@dataclass(frozen=True)
class _Outcome:
    status: OrderStatus
    exit_code: int | None = None
    error: str | None = None


class _Clock:
    """The caller's deadline is a budget for the whole call, so it starts ticking on entry."""

    def __init__(self, deadline_seconds: float | None) -> None:
        self._end = None if deadline_seconds is None else time.monotonic() + deadline_seconds

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()


# ---- public entry points -----------------------------------------------------------------------


def parse_payload(raw: Mapping[str, object] | str | bytes) -> WorkerPayload:
    """Validate a payload without echoing its values: they are URLs that must not reach any log."""
    try:
        if isinstance(raw, (str, bytes, bytearray)):
            return WorkerPayload.model_validate_json(raw)
        return WorkerPayload.model_validate(raw)
    except ValidationError as exc:
        raise PayloadError("invalid worker payload: " + validation_summary(exc)) from None


def run_sandboxed(
    payload: WorkerPayload, *, deadline_seconds: float | None = None, log_stream: TextIO | None = sys.stdout
) -> SandboxedRun:
    """The order in this process's sandbox (claimed with ``sandbox.claim``; unclaimed, the cleaning
    does nothing): cleaned before, run (as ``sandbox.command_user`` where that applies), cleaned
    after. A sandbox that cannot be cleaned before refuses the order (reported failed, nothing
    of it run): a survivor of an earlier order could read this one's secrets."""
    before = sandbox.clean()
    if not before.clean:
        logger.error("the sandbox could not be cleaned before the order: %s", before.describe())
        reason = f"the execution environment could not be cleaned before the order: {before.describe()}"
        return SandboxedRun(refuse_order(payload, reason, log_stream=log_stream), clean=False)
    if before.killed:
        logger.warning("killed %d process(es) left in the sandbox before the order", before.killed)
    try:
        user = sandbox.command_user()
    except sandbox.SandboxError as exc:
        return SandboxedRun(refuse_order(payload, str(exc), log_stream=log_stream), clean=True)
    try:
        run = execute_order(payload, deadline_seconds=deadline_seconds, log_stream=log_stream, command_user=user)
    finally:
        after = sandbox.clean()
        if not after.clean:
            logger.error("the sandbox could not be cleaned after the order: %s", after.describe())
    return SandboxedRun(run, clean=after.clean)


def refuse_order(payload: WorkerPayload, reason: str, *, log_stream: TextIO | None = sys.stdout) -> WorkerRun:
    """Report the order ``failed`` without running anything of it."""
    started_at = time.time()
    base_masker = Masker(payload_urls(payload))
    log = OrderLog(None, log_stream, base_masker)
    try:
        log.note(f"order {payload.order} of run {payload.run_id}, attempt {payload.attempt}, not run: {reason}")
        result = _result(payload, _Outcome(OrderStatus.FAILED, None, f"not run: {reason}"), started_at, log,
                         base_masker)
        reported = _report(payload, result, log)
    finally:
        log.close()
    return WorkerRun(result, reported)


def execute_order(
    payload: WorkerPayload,
    *,
    deadline_seconds: float | None = None,
    log_stream: TextIO | None = sys.stdout,
    workdir_parent: str | None = None,
    command_user: CommandUser | None = None,
) -> WorkerRun:
    """Run the order and report its result; returns the result this worker produced and whether
    a result is now stored (this one, or one another producer reported first).

    Never raises for anything that happens to the order: every failure becomes a ``failed``
    (or ``timed_out``) result, uploaded like a success. If another producer reported first
    (412), this worker's result is still returned, but the stored one is left alone. Only an
    interrupt of the worker itself (SystemExit, KeyboardInterrupt) is re-raised, after the report.
    ``command_user``: the commands run as that user (the worker must be root).
    """
    clock = _Clock(deadline_seconds)
    started_at = time.time()
    base_masker = Masker(payload_urls(payload))
    tmp: Path | None = None
    log: OrderLog | None = None
    live: LivePublisher | None = None
    interrupted: BaseException | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix="iac-ci-order-", dir=workdir_parent))
        policy = LivePolicy()
        # anonymous: nothing the commands can reach by name
        log = OrderLog(None, log_stream, base_masker, live_cap_bytes=policy.cap_bytes if payload.live_log_url else None)
        if payload.live_log_url:  # published from this process, as the final log is: the commands never see the URL
            live = LivePublisher.to_url(log, payload.live_log_url, policy=policy).start()
        outcome = _attempt(payload, tmp, log, clock, command_user)
    except BaseException as exc:  # noqa: BLE001 - even an interrupt must leave a result behind
        if not isinstance(exc, Exception):
            interrupted = exc
        outcome = _Outcome(OrderStatus.FAILED, None, _describe_unexpected(exc))
        if log is not None:
            log.note(f"order failed: {outcome.error}")
    try:
        if live is not None:  # no live upload after this: the final log takes over
            live.stop()
        result = _result(payload, outcome, started_at, log, base_masker)
        reported = _report(payload, result, log)
    finally:
        if log is not None:
            log.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted is not None:
        raise interrupted
    return WorkerRun(result, reported)


# ---- the order, step by step ------------------------------------------------------------------


def _attempt(
    payload: WorkerPayload, tmp: Path, log: OrderLog, clock: _Clock, command_user: CommandUser | None
) -> _Outcome:
    """Everything that can go wrong inside the order becomes an outcome here, never an exception."""
    try:
        prepared = prepare(payload, tmp, log)
        outcome = _run_commands(payload, prepared, tmp, log, clock, command_user)
        if outcome.status in SUCCESSES and prepared.manifest.artifacts:
            try:
                _publish_artifacts(payload, prepared, tmp, log)
            except OrderFailure as exc:  # the commands did exit 0: keep that exit code
                outcome = replace(outcome, status=OrderStatus.FAILED, error=str(exc))
    except OrderFailure as exc:
        outcome = _Outcome(OrderStatus.FAILED, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - a worker bug still has to produce a result
        logger.error("internal worker error: %s", redact_credentials(log.mask(repr(exc))))
        outcome = _Outcome(OrderStatus.FAILED, None, _describe_unexpected(exc))
    if outcome.status is OrderStatus.SUCCEEDED:
        log.note("order succeeded")
    elif outcome.status is OrderStatus.DRIFTED:
        log.note("order drifted: its plan exited 2 (changes present)")
    else:
        log.note(f"order {outcome.status.value}: {outcome.error or ''}")  # masked, then redacted, as every line
    return outcome


# ---- running the commands ----------------------------------------------------------------------


def _script(cmds: list[str]) -> str:
    """Each command is announced before it runs, so the log shows where a failure happened."""
    lines = ["set -eo pipefail"]
    for cmd in cmds:
        lines.append("printf '%s\\n' " + shlex.quote("$ " + cmd))
        lines.append(cmd)
    return "\n".join(lines) + "\n"


def _time_limit(payload: WorkerPayload, manifest: Manifest, clock: _Clock) -> tuple[float, str]:
    limits = [(float(manifest.timeout), "the order's timeout"), (float(payload.timeout), "the dispatch timeout")]
    remaining = clock.remaining()
    if remaining is not None:
        limits.append((remaining, "the worker's remaining time"))
    if payload.not_after is not None:  # the orchestrator kept a margin for reporting before the watchdog speaks
        limits.append((payload.not_after - time.time(), "the watchdog's deadline"))
    return min(limits, key=lambda item: item[0])


def _run_commands(
    payload: WorkerPayload, prepared: Prepared, tmp: Path, log: OrderLog, clock: _Clock, user: CommandUser | None
) -> _Outcome:
    manifest = prepared.manifest
    limit, source = _time_limit(payload, manifest, clock)
    if limit <= 0:
        return _Outcome(OrderStatus.TIMED_OUT, None, f"no time left to start the commands ({source})")
    script = tmp / "script.sh"
    script.write_text(_script(manifest.cmds), encoding="utf-8")
    if user is not None:
        script.chmod(0o644)
        _hand_over(tmp, prepared, user)
        log.note(f"the commands run as {user.name} (uid {user.uid})")
    log.note(f"running {len(manifest.cmds)} command(s) in {manifest.dir or '.'} (limit {limit:.0f}s)")
    end = run_script(
        script,
        cwd=prepared.workdir,
        env=prepared.env,
        log=log,
        limit=limit,
        source=source,
        kill_grace_seconds=payload.kill_grace_seconds,
        user=user,
    )
    if end.timed_out:
        return _Outcome(OrderStatus.TIMED_OUT, None, f"timed out after {limit:.0f}s ({source})")
    if end.returncode == 0:
        return _Outcome(OrderStatus.SUCCEEDED, 0)
    if end.returncode == DRIFT_EXIT_CODE and manifest.drift:
        return _Outcome(OrderStatus.DRIFTED, DRIFT_EXIT_CODE)
    code = end.returncode if end.returncode > 0 else 128 - end.returncode  # killed by a signal: the shell's convention
    return _Outcome(OrderStatus.FAILED, code, f"a command exited with code {code}")


def _hand_over(tmp: Path, prepared: Prepared, user: CommandUser) -> None:
    """The commands' user gets the source tree, HOME and TMPDIR. The order's directory itself stays
    the worker's, traversable but neither listable nor writable, so nothing the worker writes
    there after the commands (the artifacts archive) can be a link they planted."""
    tmp.chmod(0o711)
    roots = {tmp / BUNDLE_CODE_DIR, prepared.workdir}
    roots.update(Path(prepared.env[v]) for v in ("HOME", "TMPDIR") if prepared.env.get(v))
    for root in roots:
        if root.is_relative_to(tmp) and root != tmp and root.exists():
            _chown_tree(root, user)


def _chown_tree(root: Path, user: CommandUser) -> None:
    """Before any command ran, so nothing in the tree can change under the walk; links are not followed."""
    os.chown(root, user.uid, user.gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), user.uid, user.gid, follow_symlinks=False)


def _publish_artifacts(payload: WorkerPayload, prepared: Prepared, tmp: Path, log: OrderLog) -> None:
    if not payload.artifacts_url:
        raise OrderFailure("the order declares artifacts but the worker was given nowhere to upload them")
    workdir = prepared.workdir
    declared = [relative_path(p, "artifact path") for p in prepared.manifest.artifacts]
    missing = [rel for rel in declared if not os.path.lexists(workdir / rel)]
    if missing:
        raise OrderFailure("declared artifact(s) not found after the commands ran: " + ", ".join(missing))
    archive = tmp / "artifacts.tar.gz"
    pack_artifacts(archive, workdir, declared, log)
    try:
        http_put(payload.artifacts_url, archive, "application/gzip")
    except TransferError as exc:
        raise OrderFailure(f"could not upload the artifacts: {exc}") from None
    log.note("uploaded artifacts: " + ", ".join(declared))


# ---- the result --------------------------------------------------------------------------------


def _result(
    payload: WorkerPayload, outcome: _Outcome, started_at: float, log: OrderLog | None, base_masker: Masker
) -> OrderResult:
    error = None
    if outcome.error:
        # the order's secrets first, whole: redacting first could cut one and leave its rest unmatched
        masked = redact_credentials((log.mask if log is not None else base_masker.mask)(outcome.error))
        error = masked[:MAX_ERROR_CHARS]
    return OrderResult(
        run_id=payload.run_id,
        order=payload.order,
        attempt=payload.attempt,
        status=outcome.status,
        exit_code=outcome.exit_code,
        started_at=started_at,
        finished_at=time.time(),
        log_tail=log.tail if log is not None else "",
        error=error,
        producer="worker",
    )


def _report(payload: WorkerPayload, result: OrderResult, log: OrderLog | None) -> bool:
    """Log first (the result announces it), then the result, written only if nobody else did."""
    if log is not None:
        try:
            http_put(payload.log_url, log.upload_body(), "text/plain; charset=utf-8")
        except TransferError as exc:
            logger.error("could not upload the order log: %s", exc)
    try:
        http_put(
            payload.result_url, result.model_dump_json().encode(), "application/json", headers={"If-None-Match": "*"}
        )
    except TransferError as exc:
        if exc.status == 412:
            logger.warning(
                "a result for %s/%s was already reported (by the watchdog?); leaving it", payload.run_id, payload.order
            )
            return True
        logger.error("could not report the result of %s/%s: %s", payload.run_id, payload.order, exc)
        return False
    return True


def _describe_unexpected(exc: BaseException) -> str:
    if isinstance(exc, SystemExit | KeyboardInterrupt):
        return "the worker was stopped before the order finished"
    return f"internal worker error ({type(exc).__name__}): {exc}"
