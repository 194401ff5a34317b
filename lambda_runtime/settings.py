"""Runtime configuration, read once from the environment the construct (or the embedded runner) sets.

Every component gets its resource names from here, so a misconfigured function fails at
start-up with the variable's name instead of deep inside a request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambda_runtime.job.validate import ValidationPolicy
from lambda_runtime.policy.model import Policy, TriggerEvent, permissive_policy, policy_from_json
from lambda_runtime.schema import retention
from lambda_runtime.schema.images import ImageAllowList

ENV_PREFIX = "IAC_CI_"


@lru_cache(maxsize=4)
def _parse_images(text: str) -> ImageAllowList:
    return ImageAllowList.from_json(text)


@lru_cache(maxsize=4)
def _parse_policy(text: str) -> Policy:
    return policy_from_json(text)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    orders_table: str
    events_table: str
    locks_table: str
    idempotency_table: str
    internal_bucket: str
    done_bucket: str
    state_bucket: str
    kms_key_arn: str
    watchdog_arn: str
    webhook_secret_id: str
    worker_function: str = ""
    codebuild_project: str = ""
    region: str = "us-east-1"
    embedded: bool = False
    allowed_ssm_prefixes: tuple[str, ...] = ("/iac-ci/",)
    allowed_secret_prefixes: tuple[str, ...] = ("iac-ci/",)
    allowed_role_arns: tuple[str, ...] = ()
    allowed_source_buckets: tuple[str, ...] = ()
    allowed_exact_refs: tuple[str, ...] = ()
    # the deployment policy as JSON (``Policy.to_json``); empty: one default environment made of
    # the allowed_* prefixes above, which is today's behaviour
    policy: str = ""
    # orders running at once in one run (0: no cap); the rest stay queued until one finishes
    max_running_per_run: int = Field(default=0, ge=0)
    # orders running at once across every run of the deployment (0: no cap; ``store.slots``)
    max_running_per_deployment: int = Field(default=0, ge=0)
    # GitHub (all optional: without a webhook secret, /webhooks/github answers 404)
    github_webhook_secret_id: str = ""
    github_token_secret_id: str = ""
    github_app_secret_id: str = ""  # JSON {"app_id": ..., "private_key": ...}
    github_api_url: str = "https://api.github.com"
    github_config_file: str = ".iac-ci.yml"
    vcs_update_interval_seconds: int = Field(default=10, ge=0)
    github_seconds_between_writes: float = Field(default=1.0, ge=0)
    # signed links to a run's logs in PR comments (``intake.log_links``): the API's public base URL
    # and the secret signing them; either empty: comments carry no links and the route answers 404
    api_url: str = ""
    log_link_secret_id: str = ""
    # how long a link stays valid (its expiry is rounded up to the hour, so a re-render is identical)
    log_link_ttl_seconds: int = Field(default=14 * 86400, ge=60)
    # pipelines: the EventBridge Scheduler group holding the repositories' schedules, the role it
    # sends with and the queue it sends to (the packaging function's); any empty: no schedules
    schedule_group: str = ""
    scheduler_role_arn: str = ""
    schedule_queue_arn: str = ""
    # notifications: the EventBridge bus every run and order state change is published on
    # (``notify``; empty: none), and the name events carry to tell deployments apart
    event_bus: str = ""
    deployment_name: str = "iac-ci"
    # the worker images orders may name (``schema.images.ImageAllowList`` as JSON; empty: only the engine's)
    images: str = ""
    lock_lease_seconds: int = Field(default=120, ge=5)
    watchdog_grace_seconds: int = Field(default=300, ge=1)
    presign_margin_seconds: int = Field(default=3600, ge=60)
    # retention (``schema.retention``): a final run's items expire this many days after it ends; its
    # order events this many days after they are written
    run_retention_days: int = Field(default=retention.RUN_RETENTION_DAYS, ge=1)
    # the longest a run may last here: caps a job's ``timeout``, so a run's objects (which expire
    # ``run_object_days`` after they are written) outlive it
    max_run_days: int = Field(default=retention.MAX_RUN_DAYS, ge=1, le=retention.MAX_RUN_DAYS)
    event_ttl_days: int = Field(default=retention.EVENT_RETENTION_DAYS, ge=1)
    max_body_bytes: int = 1_000_000
    # caps on one fetched source (git checkout or extracted zip; the zip object and the fetched
    # repository too): bytes on disk and number of files (packaging.sources.SourceLimits)
    max_source_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_source_files: int = Field(default=100_000, ge=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            key = ENV_PREFIX + name.upper()
            if key not in env:
                continue
            value: object = env[key]
            if field.annotation == tuple[str, ...]:
                value = _csv(env[key])
            elif field.annotation is bool:
                value = env[key].lower() in ("1", "true", "yes")
            raw[name] = value
        raw.setdefault("region", env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            missing = [ENV_PREFIX + str(e["loc"][0]).upper() for e in exc.errors() if e["type"] == "missing"]
            raise RuntimeError(f"iac-ci is misconfigured; missing or invalid environment: {missing or exc}") from exc

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env: what a function's environment must hold."""
        out = {}
        for name, value in self.model_dump().items():
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[ENV_PREFIX + name.upper()] = str(value)
        return out

    @property
    def schedules_enabled(self) -> bool:
        return bool(self.schedule_group and self.scheduler_role_arn and self.schedule_queue_arn)

    def image_allow_list(self) -> ImageAllowList:
        return _parse_images(self.images)

    @property
    def github_enabled(self) -> bool:
        """Whether runs report to GitHub (a token or an App is configured)."""
        return bool(self.github_token_secret_id or self.github_app_secret_id)

    def deployment_policy(self) -> Policy:
        """The policy every component applies; parsed once per process."""
        return _parse_policy(self.policy) if self.policy else permissive_policy(
            ssm=(*self.allowed_ssm_prefixes, *self.allowed_exact_refs),
            secrets=(*self.allowed_secret_prefixes, *self.allowed_exact_refs),
            roles=self.allowed_role_arns)

    def validation_policy(self, event: TriggerEvent = TriggerEvent.SUBMIT, branch: str | None = None, *,
                          withhold_credentials: bool = False) -> ValidationPolicy:
        return ValidationPolicy(
            ssm_prefixes=self.allowed_ssm_prefixes,
            secret_prefixes=self.allowed_secret_prefixes,
            role_arn_patterns=self.allowed_role_arns,
            source_bucket_patterns=self.allowed_source_buckets,
            allow_local_sources=self.embedded,
            allowed_exact=frozenset(self.allowed_exact_refs),
            # the deployment's own GitHub token is the git credential of pull-request runs, and only that
            git_token_exact=frozenset({self.github_token_secret_id} - {""}),
            engine_secrets=self.engine_secret_ids,
            deployment=self.deployment_policy(),
            event=event,
            branch=branch,
            withhold_credentials=withhold_credentials,
            images=self.image_allow_list(),
            max_job_timeout=retention.max_job_timeout(self.max_run_days),
        )

    @property
    def engine_secret_ids(self) -> frozenset[str]:
        """The engine's own credentials: never an order's secret, whatever a job says."""
        return frozenset({self.webhook_secret_id, self.github_webhook_secret_id, self.github_token_secret_id,
                          self.github_app_secret_id, self.log_link_secret_id} - {""})
