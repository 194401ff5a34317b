"""The job file: the public contract users write, as pydantic models.

Each model forbids unknown fields so a typo (``depends-on``) is an error, not a silently
ignored dependency. Cross-order rules (dependencies, cycles, inputs, allow-lists) live in
``lambda_runtime.job.validate`` because they need the whole job.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

JOB_NAME_RE = r"^[a-z0-9][a-z0-9-]*$"
ORDER_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
REPO_RE = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
ROLE_ARN_RE = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$"

DEFAULT_JOB_TIMEOUT = 21600
MAX_JOB_TIMEOUT = 7 * 24 * 3600
DEFAULT_ORDER_TIMEOUT = 600
MAX_LAMBDA_TIMEOUT = 900
MAX_CODEBUILD_TIMEOUT = 8 * 3600  # CodeBuild's own build timeout ceiling
MAX_CMDS = 200
MAX_CMD_LEN = 16384

EnvMap = dict[Annotated[str, Field(pattern=ENV_NAME_RE, max_length=128)], Annotated[str, Field(max_length=32768)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def check_relative_path(value: str, *, allow_root: bool = False) -> str:
    """Reject paths that could escape the order's folder (absolute, ``..``, NUL, empty) and
    return them normalised (``./dist/`` -> ``dist``), as the worker will resolve them.
    ``.`` (the folder itself) is only meaningful for ``dir``."""
    if not value or "\x00" in value:
        raise ValueError("must be a non-empty relative path")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise ValueError("must be relative, not absolute")
    parts = re.split(r"[/\\]", value)
    if ".." in parts:
        raise ValueError("must not contain '..'")
    normal = posixpath.normpath(value.replace("\\", "/"))
    if normal == "." and not allow_root:
        raise ValueError("must name a file or folder inside the working directory, not '.' itself")
    return normal


RelPath = Annotated[str, Field(max_length=1024)]


class SsmRef(_Strict):
    ssm: str = Field(min_length=1, max_length=2048, description="SSM parameter name, e.g. /iac-ci/prod/db-password")


class SecretsManagerRef(_Strict):
    secret: str = Field(min_length=1, max_length=2048, description="Secrets Manager secret id or ARN")
    key: str | None = Field(default=None, max_length=256, description="JSON key inside the secret string")


class SsmSecret(SsmRef):
    env: str = Field(pattern=ENV_NAME_RE, max_length=128)


class SecretsManagerSecret(SecretsManagerRef):
    env: str = Field(pattern=ENV_NAME_RE, max_length=128)


def _kind(*keys: str) -> Discriminator:
    """Pick a union member by the key that names it, so errors speak of one shape, not all."""

    def pick(value: Any) -> str | None:
        if isinstance(value, dict):
            for key in keys:
                if key in value:
                    return key
        elif isinstance(value, BaseModel):
            for key in keys:
                if hasattr(value, key):
                    return key
        return None

    return Discriminator(
        pick, custom_error_type="source_kind", custom_error_message=f"must have exactly one of: {', '.join(keys)}"
    )


SecretSpec = Annotated[
    Annotated[SsmSecret, Tag("ssm")] | Annotated[SecretsManagerSecret, Tag("secret")], _kind("ssm", "secret")
]
TokenRef = Annotated[
    Annotated[SsmRef, Tag("ssm")] | Annotated[SecretsManagerRef, Tag("secret")], _kind("ssm", "secret")
]


class GitSpec(_Strict):
    url: str = Field(min_length=1, max_length=2048)
    ref: str | None = Field(default=None, max_length=256, description="Branch, tag or commit; default HEAD")
    token: TokenRef | None = None

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if not re.match(r"^(https://|ssh://|git@|file://)", v):
            raise ValueError("must be an https://, ssh://, git@ or file:// URL")
        return v

    @field_validator("ref")
    @classmethod
    def _ref_safe(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("-") or not re.match(r"^[A-Za-z0-9_./@^~+-]+$", v) or ".." in v):
            raise ValueError("is not a valid git ref")
        return v


class GitSource(_Strict):
    git: GitSpec


class S3Source(_Strict):
    s3: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+\.zip$", description="s3://bucket/key.zip")


class PathSource(_Strict):
    path: str = Field(min_length=1, max_length=4096, description="Local directory (embedded mode only)")


Source = Annotated[
    Annotated[GitSource, Tag("git")] | Annotated[S3Source, Tag("s3")] | Annotated[PathSource, Tag("path")],
    _kind("git", "s3", "path"),
]


class InputRef(_Strict):
    from_: str = Field(alias="from", pattern=ORDER_NAME_RE, max_length=64)
    path: RelPath

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_relative_path(v)


PrEvent = Literal["opened", "synchronize", "reopened", "ready_for_review", "comment", "merge", "merge_group"]
Requirement = Literal["approved", "mergeable", "undiverged", "checks_green"]
LOCK_NAME_RE = r"^[A-Za-z0-9_.:/@#+=-]{1,256}$"


class When(_Strict):
    """Which pull-request events select an order. ``paths`` are globs over the repository's paths
    (``**`` crosses folders); an order with ``dir`` and no ``paths`` answers to that dir's files."""

    paths: list[Annotated[str, Field(min_length=1, max_length=512)]] | None = Field(default=None, max_length=100)
    events: list[PrEvent] | None = None  # None: every event of its command

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str] | None) -> list[str] | None:
        for p in v or ():
            if p.startswith("/") or "\x00" in p or ".." in p.split("/"):
                raise ValueError(f"'{p[:100]}' must be a relative glob without '..'")
        return v


class PlanRun(_Strict):
    """Set by iac-ci only (an apply run): the plan run whose artifacts its inputs take."""

    run_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    commit: str = Field(pattern=r"^[0-9a-fA-F]{7,64}$")
    orders: list[Annotated[str, Field(pattern=ORDER_NAME_RE, max_length=64)]] = Field(max_length=5000)


class Context(_Strict):
    """Set by iac-ci only: what started the run, given to every order as ``IAC_CI_*`` variables
    and a file of changed paths."""

    repo: str | None = Field(default=None, pattern=REPO_RE, max_length=200)
    pr_number: int | None = Field(default=None, ge=1)
    head_sha: str | None = Field(default=None, max_length=64)  # the commit that runs (a merge's: the merge commit)
    base_ref: str | None = Field(default=None, max_length=256)
    base_sha: str | None = Field(default=None, max_length=64)
    event: str = Field(default="submit", max_length=64)
    command: str | None = Field(default=None, max_length=16)
    changed_paths: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=3000)

    def env(self) -> dict[str, str]:
        pairs = {"IAC_CI_REPO": self.repo, "IAC_CI_PR_NUMBER": str(self.pr_number) if self.pr_number else None,
                 "IAC_CI_HEAD_SHA": self.head_sha, "IAC_CI_BASE_REF": self.base_ref, "IAC_CI_BASE_SHA": self.base_sha,
                 "IAC_CI_EVENT": self.event, "IAC_CI_COMMAND": self.command}
        return {k: v for k, v in pairs.items() if v}


class Order(_Strict):
    name: str = Field(pattern=ORDER_NAME_RE, max_length=64)
    cmds: list[Annotated[str, Field(min_length=1, max_length=MAX_CMD_LEN)]] = Field(min_length=1, max_length=MAX_CMDS)
    target: Literal["lambda", "codebuild"] = "codebuild"
    timeout: int = Field(default=DEFAULT_ORDER_TIMEOUT, ge=1, le=MAX_CODEBUILD_TIMEOUT, strict=True)
    depends_on: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=1000)
    must_succeed: bool = Field(default=True, strict=True)
    dir: RelPath | None = None
    source: Source | None = None
    env: EnvMap = Field(default_factory=dict)
    secrets: list[SecretSpec] = Field(default_factory=list, max_length=100)
    aws_role: str | None = Field(default=None, pattern=ROLE_ARN_RE, max_length=2048)
    # which of the deployment policy's environments grants the secrets and role (and whose rules
    # must pass before they are given); none: the policy's default environment
    environment: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    artifacts: list[RelPath] = Field(default_factory=list, max_length=100)
    inputs: list[InputRef] = Field(default_factory=list, max_length=100)
    # pull requests: the command it answers to (plan runs on open and push; apply on `/iac-ci
    # apply`, or on merge with ``apply_on: merge``), the events and paths that select it, the lock
    # it holds (default ``<repo>:<dir>`` for an order with ``dir``; false: none) and what must hold
    # before an apply starts
    command: Literal["plan", "apply"] = "plan"
    when: When | None = None
    apply_on: Literal["command", "merge"] | None = None  # None: the policy's pull_requests.apply_on
    lock: Annotated[str, Field(pattern=LOCK_NAME_RE)] | Literal[False] | None = None
    apply_requirements: list[Requirement] = Field(default_factory=list, max_length=4)
    required_reviews: int | None = Field(default=None, ge=1, le=50, strict=True)

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str | None) -> str | None:
        if v is None:
            return None
        normal = check_relative_path(v, allow_root=True)
        return None if normal == "." else normal

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, v: list[str]) -> list[str]:
        return [check_relative_path(p) for p in v]

    @model_validator(mode="after")
    def _lambda_timeout(self) -> Order:
        if self.target == "lambda" and self.timeout > MAX_LAMBDA_TIMEOUT:
            raise ValueError(f"timeout: at most {MAX_LAMBDA_TIMEOUT} seconds for target lambda (got {self.timeout})")
        envs = [s.env for s in self.secrets]
        dup = sorted({e for e in envs if envs.count(e) > 1})
        if dup:
            raise ValueError(f"secrets: env {', '.join(dup)} declared more than once")
        return self

    def apply_only_fields(self) -> list[str]:
        """Fields set on a plan order that only an apply order takes (validation names each)."""
        if self.command != "plan":
            return []
        given = [n for n in ("apply_on", "required_reviews") if getattr(self, n) is not None]
        return given + (["apply_requirements"] if self.apply_requirements else [])

    def lock_name(self, repo: str | None, *, pull_request: bool) -> str | None:
        """The lock it takes: its own ``lock``; else, in a pull request's run, ``<repo>:<dir>`` for
        an order with a ``dir`` (a job submitted directly takes only the locks it names)."""
        if self.lock is False:
            return None
        if self.lock:
            return self.lock
        return f"{repo.lower()}:{self.dir}" if self.dir and repo and pull_request else None


class Job(_Strict):
    name: str = Field(pattern=JOB_NAME_RE, max_length=63, description="Flow label")
    username: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    repo: str | None = Field(default=None, pattern=REPO_RE, max_length=200)
    pr_number: int | None = Field(default=None, ge=1, strict=True)
    commit: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{7,64}$")
    timeout: int = Field(default=DEFAULT_JOB_TIMEOUT, ge=1, le=MAX_JOB_TIMEOUT, strict=True)
    env: EnvMap = Field(default_factory=dict)
    source: Source | None = None
    orders: list[Order] = Field(min_length=1, max_length=5000)
    # set by iac-ci only (refused from a job author): see PlanRun and Context
    plan_run: PlanRun | None = None
    context: Context | None = None

    def order(self, name: str) -> Order:
        for o in self.orders:
            if o.name == name:
                return o
        raise KeyError(name)

    def source_for(self, order: Order) -> Source | None:
        return order.source if order.source is not None else self.source
