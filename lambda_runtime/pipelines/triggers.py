"""``on:``: what starts a job of ``.iac-ci.yml``, as pydantic models (the one schema of triggers).

- ``pull_request``: the pull-request flow (plans on open and push, applies on command or merge);
  a config's jobs without ``on`` answer to it, as before triggers existed.
- ``push``: a push to a branch or a tag matching the globs, and (branches only) touching ``paths``;
  the changed files are those between the push's ``before`` and ``after``.
- ``schedule``: cron expressions, in UTC, fired by EventBridge Scheduler (``iac-ci serve`` locally).
- ``after``: another job's run finished with one of ``statuses``; ``repo`` names another repository
  (which the deployment policy must allow, ``pipelines.chains``).

Globs: ``*`` stays within a path segment, ``**`` crosses them (``github.selection.glob``).
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lambda_runtime.job.model import JOB_NAME_RE, REPO_RE

Glob = Annotated[str, Field(min_length=1, max_length=256)]
MAX_SCHEDULES_PER_JOB = 10
AfterStatus = Literal["succeeded", "drifted", "failed", "timed_out", "cancelled"]
_DEFAULT_AFTER: tuple[AfterStatus, ...] = ("succeeded",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _globs(values: list[str] | None, what: str) -> list[str] | None:
    for v in values or ():
        if "\x00" in v or v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"{what} '{v[:100]}' must be a relative glob without '..'")
    return values


class PushTrigger(_Strict):
    branches: list[Glob] | None = Field(default=None, max_length=50)  # None: every branch (unless tags is set)
    tags: list[Glob] | None = Field(default=None, max_length=50)  # None: no tag
    paths: list[Glob] | None = Field(default=None, max_length=100)  # None: any change (branches only)
    # whether the run pins the pushed commit even if the branch moves on (always true: a push
    # runs what was pushed); kept for readability in the docs, not a setting

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str] | None) -> list[str] | None:
        return _globs(v, "path")

    def matches_ref(self, ref: str) -> bool:
        from lambda_runtime.github.selection import glob_match

        if ref.startswith("refs/tags/"):
            return self.tags is not None and any(glob_match(p, ref.removeprefix("refs/tags/")) for p in self.tags)
        if ref.startswith("refs/heads/"):
            if self.branches is None:
                return self.tags is None
            return any(glob_match(p, ref.removeprefix("refs/heads/")) for p in self.branches)
        return False

    def matches_paths(self, ref: str, changed: list[str] | None) -> bool:
        """A tag push ignores ``paths`` (a tag names a commit, not a change); None: unknown, runs."""
        from lambda_runtime.github.selection import glob_match

        if self.paths is None or ref.startswith("refs/tags/") or changed is None:
            return True
        return any(glob_match(p, f) for f in changed for p in self.paths)


class PullRequestTrigger(_Strict):
    branches: list[Glob] | None = Field(default=None, max_length=50)  # the base branch; None: any

    def matches_base(self, base_ref: str) -> bool:
        from lambda_runtime.github.selection import glob_match

        return self.branches is None or any(glob_match(p, base_ref) for p in self.branches)


class Schedule(_Strict):
    cron: str = Field(min_length=9, max_length=128, description="5 fields, UTC: minute hour day month weekday")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from lambda_runtime.pipelines import cron

        cron.to_eventbridge(v)  # raises ValueError naming what is wrong
        return " ".join(v.split())


class AfterTrigger(_Strict):
    job: str = Field(pattern=JOB_NAME_RE, max_length=63)
    repo: str | None = Field(default=None, pattern=REPO_RE, max_length=200)  # None: this repository
    statuses: list[AfterStatus] = Field(default_factory=lambda: list(_DEFAULT_AFTER), min_length=1, max_length=5)
    branches: list[Glob] | None = Field(default=None, max_length=50)  # the upstream run's branch; None: any


class On(_Strict):
    pull_request: PullRequestTrigger | None = None
    push: PushTrigger | None = None
    schedule: list[Schedule] | None = Field(default=None, max_length=MAX_SCHEDULES_PER_JOB)
    after: list[AfterTrigger] | None = Field(default=None, max_length=20)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        """``on: [push, pull_request]`` and ``on: {push: }`` (YAML's null) mean "with no filter"."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not all(isinstance(k, str) for k in value):
                raise ValueError("a list of triggers names them: [push, pull_request]")
            value = {k: {} for k in value}
        if isinstance(value, dict):
            value = {k: ({} if v is None and k in ("pull_request", "push") else v) for k, v in value.items()}
            if isinstance(value.get("after"), dict):
                value["after"] = [value["after"]]
        return value

    @property
    def empty(self) -> bool:
        return not (self.pull_request or self.push or self.schedule or self.after)


DEFAULT_ON = On(pull_request=PullRequestTrigger())


def trigger_names(on: On) -> list[str]:
    return [n for n in ("pull_request", "push", "schedule", "after") if getattr(on, n)]


def safe_job_ref(text: str) -> bool:
    return bool(re.match(JOB_NAME_RE, text))
