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
# a matrix instance's name: ``tests[python=3.11]`` or ``build[os=linux,arch=arm64]`` (``job.matrix``)
INSTANCE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(\[[A-Za-z0-9_]+=[A-Za-z0-9_.-]+(,[A-Za-z0-9_]+=[A-Za-z0-9_.-]+)*\])?$"
# an input from another job's run (``on: after``): ``<job>/<order>``
UPSTREAM_REF_RE = r"^([a-z0-9][a-z0-9-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*(\[[A-Za-z0-9_.=,-]+\])?$"
PARAM_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_ORDER_NAME = 200
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
    # an order of this run, or ``<job>/<order>``: the upstream run's (``on: after``)
    from_: str = Field(alias="from", pattern=UPSTREAM_REF_RE, max_length=MAX_ORDER_NAME + 64)
    path: RelPath

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_relative_path(v)


PrEvent = Literal["opened", "synchronize", "reopened", "ready_for_review", "comment", "merge", "merge_group",
                  "push", "schedule", "after"]
Requirement = Literal["approved", "mergeable", "undiverged", "checks_green"]
LOCK_NAME_RE = r"^[A-Za-z0-9_.:/@#+=-]{1,256}$"


class When(_Strict):
    """Which events select an order: pull-request events, or a pipeline's trigger (``push``,
    ``schedule``, ``after``). ``paths`` are globs over the changed paths (``**`` crosses folders);
    in a pull request an order with ``dir`` and no ``paths`` answers to that dir's files."""

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
    orders: list[Annotated[str, Field(pattern=INSTANCE_NAME_RE, max_length=MAX_ORDER_NAME)]] = Field(max_length=5000)


class Upstream(_Strict):
    """Set by iac-ci only (``on: after``): the finished run that started this one, whose artifacts
    ``inputs: [{from: <job>/<order>}]`` take, and the chain of jobs so far (a loop is refused)."""

    run_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    job: str = Field(pattern=JOB_NAME_RE, max_length=63)
    repo: str | None = Field(default=None, pattern=REPO_RE, max_length=200)
    status: str = Field(max_length=32)
    orders: list[Annotated[str, Field(pattern=INSTANCE_NAME_RE, max_length=MAX_ORDER_NAME)]] = Field(
        default_factory=list, max_length=5000)
    chain: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=20)


ParamValue = Annotated[str, Field(max_length=4096)]


class Param(_Strict):
    """A run parameter. Its value reaches the orders only as the environment variable of its
    name (never interpolated into a command), so a value with shell metacharacters is inert."""

    type: Literal["string", "boolean", "number"] = "string"
    default: ParamValue | bool | int | float | None = None  # None: the parameter is required
    allowed: list[ParamValue] | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)

    @field_validator("default", mode="before")
    @classmethod
    def _default(cls, v: Any) -> Any:
        return _param_text(v)

    @field_validator("allowed", mode="before")
    @classmethod
    def _allowed(cls, v: Any) -> Any:
        return [_param_text(x) for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _default_fits(self) -> Param:
        if self.default is not None:
            problem = self.problem(str(self.default))
            if problem:
                raise ValueError(f"default: {problem}")
        for v in self.allowed or ():
            problem = self.problem(v, check_allowed=False)
            if problem:
                raise ValueError(f"allowed: {problem}")
        return self

    def problem(self, value: str, *, check_allowed: bool = True) -> str | None:
        """Why ``value`` is not a valid value (None: it is)."""
        shown = value if len(value) <= 60 else value[:60] + "…"
        if "\x00" in value:
            return "must not contain NUL"
        if self.type == "boolean" and value not in ("true", "false"):
            return f"'{shown}' is not a boolean (true or false)"
        if self.type == "number" and not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
            return f"'{shown}' is not a number"
        if check_allowed and self.allowed is not None and value not in self.allowed:
            return f"'{shown}' is not allowed (allowed: {', '.join(self.allowed[:20])})"
        return None


def _param_text(v: Any) -> Any:
    """YAML reads ``true`` and ``3`` as a bool and a number; a parameter's value is their text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return v


MatrixValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
# variables iac-ci, the shell or the AWS SDK set: never a parameter's or a matrix value's name
RESERVED_ENV = ("PATH", "HOME", "TMPDIR", "LANG")
RESERVED_ENV_PREFIXES = ("IAC_CI_", "AWS_")


def reserved_env(name: str) -> bool:
    return name in RESERVED_ENV or name.upper().startswith(RESERVED_ENV_PREFIXES)
MAX_MATRIX_INSTANCES = 256


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
    ref: str | None = Field(default=None, max_length=300)  # a pipeline run's ref (refs/heads/main, refs/tags/v1)
    changed_paths: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=3000)

    def env(self) -> dict[str, str]:
        pairs = {"IAC_CI_REPO": self.repo, "IAC_CI_PR_NUMBER": str(self.pr_number) if self.pr_number else None,
                 "IAC_CI_HEAD_SHA": self.head_sha, "IAC_CI_BASE_REF": self.base_ref, "IAC_CI_BASE_SHA": self.base_sha,
                 "IAC_CI_EVENT": self.event, "IAC_CI_COMMAND": self.command, "IAC_CI_REF": self.ref}
        return {k: v for k, v in pairs.items() if v}


class Order(_Strict):
    name: str = Field(pattern=INSTANCE_NAME_RE, max_length=MAX_ORDER_NAME)
    cmds: list[Annotated[str, Field(min_length=1, max_length=MAX_CMD_LEN)]] = Field(min_length=1, max_length=MAX_CMDS)
    target: Literal["lambda", "codebuild"] = "codebuild"
    timeout: int = Field(default=DEFAULT_ORDER_TIMEOUT, ge=1, le=MAX_CODEBUILD_TIMEOUT, strict=True)
    depends_on: list[Annotated[str, Field(max_length=MAX_ORDER_NAME)]] = Field(default_factory=list, max_length=1000)
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
    # pipelines: when it runs (``success``: after its dependencies succeeded; ``always``: after they
    # ended, whatever the outcome; ``failure``: only if one of them, or one before them, did not
    # succeed; ``drifted``: only if one found drift), whether exit code 2 means drift, the matrix
    # it expands into (``job.matrix``) and whether a failed instance stops its siblings
    run_if: Literal["success", "always", "failure", "drifted"] = "success"
    drift: bool = Field(default=False, strict=True)
    matrix: dict[Annotated[str, Field(pattern=PARAM_NAME_RE)], Annotated[list[MatrixValue], Field(min_length=1)]
                 ] | None = Field(default=None, min_length=1, max_length=8)
    fail_fast: bool = Field(default=True, strict=True)
    group: str | None = Field(default=None, pattern=ORDER_NAME_RE, max_length=MAX_ORDER_NAME)  # set by the expansion
    # CodeBuild only: an image the deployment allows (``images`` on the construct), by name or URI,
    # and CodeBuild's privileged mode (docker builds) where that image allows it
    image: str | None = Field(default=None, min_length=1, max_length=1024)
    privileged: bool = Field(default=False, strict=True)

    @field_validator("matrix", mode="before")
    @classmethod
    def _matrix_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: [_param_text(x) for x in vals] if isinstance(vals, list) else vals for k, vals in v.items()}
        return v

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
        if self.target == "lambda" and (self.image or self.privileged):
            raise ValueError("image: images and privileged mode are for target codebuild")
        if self.privileged and not self.image:
            raise ValueError("privileged: needs an image the deployment allows to run privileged")
        if self.drift and self.command != "plan":
            raise ValueError("drift: only a plan order detects drift")
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
    # parameters: their definitions, and the values this run was given (``-p NAME=VALUE``, the
    # API's ``param_values``, a comment's ``-p``); each order sees each as an environment variable
    params: dict[Annotated[str, Field(pattern=PARAM_NAME_RE)], Param] = Field(default_factory=dict, max_length=50)
    param_values: dict[Annotated[str, Field(max_length=64)], ParamValue] = Field(default_factory=dict,
                                                                                 max_length=50)
    # set by iac-ci only (refused from a job author): see PlanRun, Context and Upstream
    plan_run: PlanRun | None = None
    context: Context | None = None
    upstream: Upstream | None = None

    @field_validator("param_values", mode="before")
    @classmethod
    def _values_text(cls, v: Any) -> Any:
        return {k: _param_text(x) for k, x in v.items()} if isinstance(v, dict) else v

    def param_env(self) -> dict[str, str]:
        """Every parameter's value (given, else its default), as the orders' environment sees it."""
        out = {}
        for name, spec in self.params.items():
            value = self.param_values.get(name, spec.default)
            if value is not None:
                out[name] = str(value)
        return out

    def order(self, name: str) -> Order:
        for o in self.orders:
            if o.name == name:
                return o
        raise KeyError(name)

    def source_for(self, order: Order) -> Source | None:
        return order.source if order.source is not None else self.source
