"""The messages exchanged between engine parts: bundle manifest, worker payload, order result.

Packaging writes the manifest, the orchestrator writes the payload, the worker (and the
watchdog, and the orchestrator on a failed dispatch) write the result. They all import these
models so a renamed field breaks the build instead of a run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lambda_runtime.schema.status import OrderStatus

BUNDLE_MANIFEST = "manifest.json"
BUNDLE_SECRETS = "secrets.sops.json"
BUNDLE_CODE_DIR = "code"
# the variables role credentials reach an order's commands as (minted at dispatch, checked by the worker)
ROLE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
LOG_TAIL_CHARS = 4096
# How a CodeBuild build (and the embedded runner's worker process) starts the worker: the
# buildspec's one command, with the payload in this environment variable. The construct, the
# dispatcher and the worker all read them from here. ``exec``: the shell CodeBuild runs the
# command in is replaced by the worker, so no ancestor of the commands keeps the payload in its
# environment (the worker reads it, then erases it from its own).
BUILDSPEC_COMMAND = "exec python -m lambda_runtime.worker"
PAYLOAD_ENV = "IAC_CI_WORKER_PAYLOAD"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InputPlacement(_Model):
    from_order: str
    path: str


class Manifest(_Model):
    """``manifest.json`` inside a bundle: everything the worker needs except secrets and URLs."""

    run_id: str
    order: str
    trace_id: str
    flow_id: str
    cmds: list[str]
    timeout: int
    target: Literal["lambda", "codebuild"]
    drift: bool = False  # exit code 2 means drift (``terraform plan -detailed-exitcode``), not failure
    dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # what started the run (IAC_CI_REPO, IAC_CI_PR_NUMBER, ...): set after ``env``, so a job
    # cannot pass off another pull request's context as its own
    context_env: dict[str, str] = Field(default_factory=dict)
    changed_paths: list[str] | None = None  # written to the file named by IAC_CI_CHANGED_FILES
    secret_env: list[str] = Field(default_factory=list, description="names only; values arrive at dispatch")
    has_role: bool = False
    artifacts: list[str] = Field(default_factory=list)
    inputs: list[InputPlacement] = Field(default_factory=list)
    state_bucket: str = ""
    region: str = "us-east-1"
    embedded_endpoint: str | None = None


class InputUrl(_Model):
    from_order: str
    path: str
    url: str


class WorkerPayload(_Model):
    """What the orchestrator hands a worker. The URLs are capabilities: they stay in the worker
    process and never reach the commands' environment or disk, so a command cannot forge its
    own result."""

    run_id: str
    order: str
    attempt: int = 1
    trace_id: str
    bundle_url: str
    log_url: str
    # the log so far, re-uploaded while the commands run (``worker.live``): a presigned PUT may be
    # used again and again until it expires. None: no live log (an older orchestrator)
    live_log_url: str | None = None
    result_url: str
    artifacts_url: str | None = None
    # the order's credentials (sops, KMS context pinned to run and order), minted at dispatch
    secrets_url: str | None = None
    # salted digests of every credential minted in the run so far (``mask_digests``): masks them
    # in this order's log without this order ever holding their values
    mask_url: str | None = None
    inputs: list[InputUrl] = Field(default_factory=list)
    timeout: int
    # CodeBuild: the image the build runs on (None: the project's) and privileged mode
    image: str | None = None
    privileged: bool = False
    kill_grace_seconds: int = 10
    not_after: float | None = Field(
        default=None,
        description="epoch seconds by which the commands must have ended (the watchdog's deadline less a margin "
        "for reporting): a late worker (slow CodeBuild queue, throttled invoke) never runs past the watchdog",
    )


class OrderResult(_Model):
    """``result.json``: written once per order (S3 If-None-Match), by whoever speaks first."""

    run_id: str
    order: str
    attempt: int = 1
    status: OrderStatus
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_tail: str = ""
    error: str | None = None
    producer: Literal["worker", "watchdog", "engine"] = "worker"
