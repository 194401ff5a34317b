"""The construct's properties: one flat, keyword-only set, validated in one pass.

Every optional property documents the *behaviour* it defaults to. ``IacCiPipelineProps.problems``
lists every problem at once, so a misconfigured deployment is fixed in one round trip.

``IacCiPipeline.__init__`` spells these fields out as its keyword-only parameters (same names,
types and defaults, so editors and type checkers show them), builds an ``IacCiPipelineProps`` from
them and calls ``validated``: this class stays the one place that validates.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns

from iac_ci_constructs.worker_images import allow_list, image_problems
from lambda_runtime.job.model import JOB_NAME_RE, REPO_RE
from lambda_runtime.pipelines import cron
from lambda_runtime.pipelines.schedules import ScheduledJob
from lambda_runtime.policy.model import Policy, PolicyError, grant_matches, load_policy_file, permissive_policy
from lambda_runtime.schema import retention
from lambda_runtime.schema.deployment import CA_PARAMETER_ROOT
from lambda_runtime.schema.images import WorkerImage

LAMBDA_MEMORY_MIB = (128, 10_240)
LAMBDA_EPHEMERAL_STORAGE_MIB = (512, 10_240)
MAX_WATCHDOG_GRACE_SECONDS = 3_600
MiB = 1024 * 1024
# Lambda's environment holds 4 KB in all; the engine's own variables take up to about 2.6 KB (the
# generated names and ARNs of its resources), and the owner's documents (the policy and the
# images, as JSON) share the rest
MAX_DOCUMENTS_JSON = 1400
PACKAGING_EPHEMERAL_STORAGE_MIB = 2048
# a source's archive (or fetched repository) and what it expands to are both in packaging's /tmp
MAX_SOURCE_BYTES = PACKAGING_EPHEMERAL_STORAGE_MIB * MiB // 2
MAX_JOB_NAME = 63  # lambda_runtime.job.model: a job's name
SQS_MAX_CONCURRENCY = (2, 1_000)  # what an SQS event source's MaximumConcurrency accepts
ARM64, X86_64 = lambda_.Architecture.ARM_64.name, lambda_.Architecture.X86_64.name
# IAM role ARN, optionally with IAM wildcards (* and ?) in the account or the role path/name.
# fnmatch character classes ([...]) are rejected: IAM has no equivalent, so the allow-list
# the runtime checks and the policy AWS enforces would differ.
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}|\*):role/[A-Za-z0-9+=,.@_/*?-]+$")
SSM_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_./-]+$")
SECRET_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9/_+=.@-]+$")
# a custom domain of API Gateway: lowercase DNS labels, at least two, 253 characters at most
DOMAIN_NAME_PATTERN = re.compile(r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


class IacCiPipelinePropsError(ValueError):
    """Invalid properties; ``problems`` holds every one of them."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"IacCiPipeline: {len(self.problems)} invalid propert{'y' if len(problems) == 1 else 'ies'}:\n"
                         f"{lines}")


@dataclass(frozen=True, kw_only=True)
class IacCiPipelineProps:
    """Properties of ``IacCiPipeline``; all optional, pass them as keyword arguments."""

    allowed_ssm_prefixes: Sequence[str] = ("/iac-ci/",)
    """SSM parameter name prefixes jobs may reference. Default: ``("/iac-ci/",)``. Intake rejects
    references outside them and the packaging role may read nothing else (``ssm:GetParameter``)."""

    allowed_secret_prefixes: Sequence[str] = ("iac-ci/",)
    """Secrets Manager name prefixes jobs may reference. Default: ``("iac-ci/",)``; enforced by intake
    and by the packaging role's ``secretsmanager:GetSecretValue`` resources."""

    allowed_role_arns: Sequence[str] = ()
    """IAM role ARNs (IAM wildcards ``*``/``?`` allowed) orders may run as (``aws_role``). Default: none,
    orders cannot assume roles and the packaging role gets no ``sts:AssumeRole``."""

    allowed_source_buckets: Sequence[s3.IBucket] = ()
    """Buckets holding ``s3://`` zip sources (``s3.Bucket.from_bucket_name(...)`` for existing ones). Default:
    none, intake rejects S3 sources and the packaging role can read no other bucket."""

    architecture: lambda_.Architecture = lambda_.Architecture.ARM_64
    """CPU architecture of the image, every function and the CodeBuild project. Default: everything runs
    on ARM64 (Graviton)."""

    packaging_memory_mib: int = 1024
    """Memory of the packaging function (git clones, tarballs, sops). Default: the function gets 1024 MiB."""

    worker_memory_mib: int = 2048
    """Memory of the worker function (orders with ``target: lambda``). Default: the function gets 2048 MiB."""

    worker_ephemeral_storage_mib: int = 4096
    """``/tmp`` size of the worker function. Default: orders get 4096 MiB of ``/tmp``."""

    max_source_bytes: int = 512 * MiB
    """Largest source, in bytes: an S3 zip object, a fetched git repository, and what either one
    checks out or extracts to (bytes actually written, whatever an archive declares). Default: 512 MiB;
    a source past it fails its run with an error naming the source and ``max_source_bytes``. At most
    1024 MiB (the archive and its contents both sit in the packaging function's 2048 MiB ``/tmp``)."""

    max_source_files: int = 100_000
    """Most files one source may hold (zip members, files of a git checkout). Default: 100,000; a source
    with more fails its run with an error naming the source and ``max_source_files``."""

    codebuild_compute_type: codebuild.ComputeType = codebuild.ComputeType.SMALL
    """Compute type of the CodeBuild worker project (orders with ``target: codebuild``). Default: SMALL
    (orders run on CodeBuild's smallest general-purpose instances)."""

    intake_reserved_concurrency: int | None = 20
    """Concurrent executions reserved for the intake function (the API and its webhooks), so that a job
    with thousands of Lambda orders cannot take the account's whole Lambda concurrency from it. Default:
    20 (the API's default burst limit) are reserved; ``None`` reserves nothing. Reservations come out of
    the account's concurrency quota, of which AWS keeps 100 unreserved: in an account whose quota is
    below 100 plus the reservations (new accounts may start at 10), pass ``None``."""

    orchestrator_reserved_concurrency: int | None = 10
    """Concurrent executions reserved for the orchestrator, which is also the most its queue's event source
    invokes at once (SQS ``MaximumConcurrency``, so messages are not throttled back to the queue and on to
    its dead-letter queue). Default: 10 are reserved; ``None`` reserves nothing and leaves the event
    source unbounded. At least 2 (the least ``MaximumConcurrency`` accepts); AWS keeps 100 of the
    account's quota unreserved (see ``intake_reserved_concurrency``)."""

    worker_reserved_concurrency: int | None = None
    """Reserved concurrency of the worker function, which is then the most Lambda orders (``target:
    lambda``) the deployment runs at once. Default: no reservation and no cap (workers share the account's
    unreserved concurrency). Invocations past the cap wait in Lambda's asynchronous queue for up to
    ``watchdog_grace_seconds`` (the event age limit), then land in the worker failure queue and their
    orders end ``timed_out``: keep it above the number of Lambda orders that can be running at once. AWS
    keeps 100 of the account's quota unreserved (see ``intake_reserved_concurrency``)."""

    max_running_per_run: int | None = None
    """Most orders of one run running at once; its further ready orders stay ``queued`` until one
    finishes. Default: no cap per run."""

    max_running_per_deployment: int | None = None
    """Most orders running at once across every run of the deployment (Lambda and CodeBuild alike);
    further ready orders stay ``queued`` and start as slots free, in any run. Default: no cap. Prefer
    it to ``worker_reserved_concurrency`` as the bound: the engine queues, where Lambda would throttle
    an invoke into a timeout and CodeBuild would refuse a build over a project limit."""

    policy: Policy | str | Path | None = None
    """The deployment policy: a ``Policy`` or the path of its YAML file (``examples/policy.yaml``):
    repositories, trusted authors, forks, and environments with what each grants and the rules
    (branches, events, reviewers, approvals, wait timer) that must pass first. Validated at synth.
    The function roles may read and assume exactly what its environments grant. Default: one
    environment made of ``allowed_ssm_prefixes``, ``allowed_secret_prefixes`` and
    ``allowed_role_arns``, with no rules; give either those or a policy."""

    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    """What happens to tables, buckets, the KMS key, the secret and log groups when removed from the
    stack. Default: RETAIN (they outlive the stack)."""

    log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS
    """Retention of every log group the construct creates. Default: logs are kept three months."""

    run_retention_days: int = retention.RUN_RETENTION_DAYS
    """Days a run stays in the orders table once it is final (the run item and its orders carry a DynamoDB
    TTL, ``expire_at``, written when the run ends). Default: 1 day; ``iac-ci status`` of an older run says
    it expired, and its order events stay (``event_retention_days``)."""

    internal_object_retention_days: int = retention.INTERNAL_OBJECT_RETENTION_DAYS
    """Days after which the internal bucket's objects expire: job submissions, webhook deliveries and
    worker callbacks this many days after they are written; a run's bundles, logs and artifacts
    (``runs/``) this many days after the longest a run can last (``max_run_days``: S3 counts from an
    object's creation, and a run needs its objects until it ends). An expired (or deleted, or
    overwritten) object's noncurrent version goes a day later. Default: 1 day (``runs/``: 8 days)."""

    done_object_retention_days: int = retention.DONE_OBJECT_RETENTION_DAYS
    """Days after which the final run summaries (the done bucket's ``<run_id>/done`` objects, written when
    a run ends) expire; their noncurrent versions go a day later. Default: 1 day."""

    event_retention_days: int = retention.EVENT_RETENTION_DAYS
    """Days the order events (the audit trail: every transition, approval and lock change) are kept
    (DynamoDB TTL). Default: 90 days. The state bucket has no expiry, and is retained whatever
    ``removal_policy`` says: Terraform state is kept for good."""

    max_run_days: int = retention.MAX_RUN_DAYS
    """The longest a run may last, in days: intake refuses a job whose ``timeout`` is longer, and a run's
    own objects (``runs/``) expire ``internal_object_retention_days`` after that. Default: 7 days (the
    most a job's ``timeout`` allows); between 1 and 7."""

    vpc: ec2.IVpc | None = None
    """VPC for the workers (worker function and CodeBuild project). Default: workers run outside any VPC."""

    vpc_subnets: ec2.SubnetSelection | None = None
    """Subnets for the workers; needs ``vpc``. Default: the VPC's private subnets with egress (workers
    reach S3 presigned URLs, KMS and the sources of the commands)."""

    existing_kms_key: kms.IKey | None = None
    """KMS key for the sops-encrypted secrets of bundles. Default: a new customer-managed key is created,
    with yearly rotation. An existing key's policy must delegate to IAM."""

    existing_webhook_secret: secretsmanager.ISecret | None = None
    """Secret holding the HMAC key that signs requests to the API. Default: a new secret is created with a
    generated value (64 alphanumeric characters)."""

    github_webhook_secret: secretsmanager.ISecret | None = None
    """Secret of the repositories' GitHub webhook (``X-Hub-Signature-256``), which enables
    ``POST /webhooks/github``. Default: GitHub webhooks are disabled (the route answers 404)."""

    github_token_secret: secretsmanager.ISecret | None = None
    """Token for the GitHub API (comments, statuses, ``.iac-ci.yml``) and for cloning. Default: none;
    give this or ``github_app_secret`` together with ``github_webhook_secret``."""

    github_app_secret: secretsmanager.ISecret | None = None
    """GitHub App credentials, a JSON ``{"app_id": ..., "private_key": "-----BEGIN ..."}``: installation
    tokens are exchanged per event. Default: none (mutually exclusive with ``github_token_secret``)."""

    github_api_url: str = "https://api.github.com"
    """GitHub REST API base URL (GitHub Enterprise Server: ``https://<host>/api/v3``). Default: the API of
    github.com."""

    existing_access_logs_bucket: s3.IBucket | None = None
    """Destination of the buckets' server access logs. Default: a new bucket is created, keeping them for
    a year; an existing bucket must already allow ``logging.s3.amazonaws.com`` to write."""

    alarm_topic: sns.ITopic | None = None
    """SNS topic notified when an alarm fires or recovers. Default: alarms are created without actions
    (visible in CloudWatch, nobody is notified)."""

    watchdog_grace_seconds: int = 300
    """Seconds after an order's timeout before the watchdog writes ``timed_out``. Default: an order that
    has not reported is declared timed out 300 seconds after its timeout."""

    api_throttling_rate_limit_per_second: int = 10
    """Steady-state request rate of the API stage. Default: requests above 10 per second are throttled
    (HTTP 429)."""

    api_throttling_burst_limit: int = 20
    """Burst request limit of the API stage. Default: bursts of up to 20 requests are served."""

    api_cloud_watch_role: bool = True
    """Create the account-level role API Gateway needs to write logs. Default: the role is created (set
    False when the account already has one: it is one per account and region)."""

    image_directory: str | None = None
    """Directory with the ``Dockerfile`` of the runtime image. Default: the image of this package
    (the repository root in a source checkout; generated from the installed package otherwise)."""

    schedules: Sequence[ScheduledJob] = ()
    """The owner's own scheduled jobs (``ScheduledJob(repo, job, cron)``, cron in UTC), created as
    EventBridge schedules of the deployment's schedule group beside those the repositories'
    ``.iac-ci.yml`` declare. Default: none; only the repositories' own schedules fire."""

    event_bus: events.IEventBus | None = None
    """The EventBridge bus run and order state changes (and drift) are published on, and the one
    ``on_run_finished``, ``on_order_state_change`` and ``on_drift_detected`` rules listen to.
    Default: the account's default event bus."""

    images: Mapping[str, WorkerImage] | None = None
    """The worker images orders may name (``image:``), by name: only the deployment owner decides
    which images exist and which may run privileged. The CodeBuild role may pull the ECR ones.
    Default: none; every order runs on the engine's own image."""

    dashboard: bool = True
    """A CloudWatch dashboard of the deployment (``IacCiPipeline.dashboard``): runs and orders by
    outcome, order duration, queue wait and dispatch latency percentiles, the functions' errors,
    throttles and durations, dead letters, watchdog timeouts, the API's errors and latency, and
    the alarms. Default: created (False: none; the metrics and alarms exist either way)."""

    tracing: bool = True
    """X-Ray: active tracing on every function, the watchdog state machine and the API stage, and
    one X-Ray trace per run joining its legs (``lambda_runtime.observability``). Default: on
    (False: nothing is traced and no X-Ray permission is granted)."""

    api_domain_name: str | None = None
    """Custom domain of the API (``ci.example.com``), with mutual TLS: every caller presents a client
    certificate of ``iac-ci certs``, checked in the TLS handshake against the truststore and then by
    the intake function against the certificates table (revoked or unknown: 403). The default
    execute-api endpoint is disabled and the ``ApiUrl`` output is ``https://<domain>``; point the
    domain's DNS at the ``ApiDomainTarget`` output. Needs ``api_domain_certificate`` and a truststore,
    which ``iac-ci certs init`` writes: deploy with ``api_mtls_certificates=True`` first. GitHub
    webhooks present no certificate, so not with ``github_webhook_secret``. Default: no custom
    domain; the execute-api endpoint with HMAC-signed requests only."""

    api_domain_certificate: acm.ICertificate | None = None
    """ACM certificate for ``api_domain_name``, in the stack's region (the domain is regional). Default:
    none; ``api_domain_name`` needs one."""

    api_mtls_truststore_bucket: s3.IBucket | None = None
    """Bucket of the mutual TLS truststore (``iac-ci certs`` writes it; versioned, so API Gateway is told
    each new version). Default: a new bucket is created (versioned, SSE-S3, access logged) with mutual
    TLS (``api_domain_name`` or ``api_mtls_certificates``)."""

    api_mtls_truststore_key: str = "truststore.pem"
    """Object key of the truststore in its bucket. Default: ``truststore.pem``."""

    api_mtls_certificates: bool = False
    """Create mutual TLS's certificate authority resources (the certificates table, the truststore bucket,
    a KMS key for the CA keys in SSM, ``grant_manage_certificates``) before the domain: API Gateway
    reads the truststore when it creates the domain, so deploy with this, run ``iac-ci certs init
    --stack``, then add ``api_domain_name``. Default: they are created with ``api_domain_name`` only."""

    @property
    def is_arm64(self) -> bool:
        return bool(self.architecture.name == ARM64)

    # ---- validation ---------------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def deployment_policy(self) -> Policy:
        """The policy the engine applies (the given one, or the allowed_* prefixes as one environment)."""
        if isinstance(self.policy, Policy):
            return self.policy
        if self.policy is not None:
            return load_policy_file(self.policy)
        return permissive_policy(ssm=self.allowed_ssm_prefixes, secrets=self.allowed_secret_prefixes,
                                 roles=self.allowed_role_arns)

    def _policy_problems(self) -> list[str]:
        if self.policy is None:
            return []
        if not isinstance(self.policy, (Policy, str, Path)):
            return ["policy must be a Policy or the path of a policy YAML file"]
        out = []
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in ("allowed_ssm_prefixes", "allowed_secret_prefixes", "allowed_role_arns"):
            if tuple(getattr(self, name)) != tuple(defaults[name]):  # type: ignore[arg-type]
                out.append(f"{name} and policy are exclusive: with a policy, its environments say what is granted")
        try:
            self.deployment_policy().to_json()
        except PolicyError as exc:
            return out + [f"policy: {p}" for p in exc.problems]
        return out

    def _environment_problems(self) -> list[str]:
        """The policy and the images travel in every engine function's environment (4 KB in all);
        an invalid one is reported by its own check."""
        sizes: dict[str, int] = {}
        if isinstance(self.policy, Policy | str | Path):
            try:
                sizes["policy"] = len(self.deployment_policy().to_json())
            except PolicyError:
                pass
        if self.images is not None and not image_problems(self.images):
            sizes["images"] = len(allow_list(self.images).to_json())
        total = sum(sizes.values())
        if total <= MAX_DOCUMENTS_JSON:
            return []
        each = ", ".join(f"{name} {size}" for name, size in sizes.items())
        return [f"{' and '.join(sizes)}: {total} characters as JSON ({each}), more than the {MAX_DOCUMENTS_JSON} "
                "a Lambda environment leaves for them"]

    def _schedule_problems(self) -> list[str]:
        if isinstance(self.schedules, str) or not all(isinstance(j, ScheduledJob) for j in self.schedules):
            return ["schedules must be a sequence of ScheduledJob(repo, job, cron)"]
        out, seen = [], set()
        for job in self.schedules:
            what = f"schedules: {job.repo} job {job.job} at '{job.cron}'"
            if not re.match(REPO_RE, job.repo):
                out.append(f"{what}: the repository must be <owner>/<name>")
            if not re.match(JOB_NAME_RE, job.job) or len(job.job) > MAX_JOB_NAME:
                out.append(f"{what}: the job name must match {JOB_NAME_RE}, at most {MAX_JOB_NAME} characters")
            try:
                cron.to_eventbridge(job.cron)  # what the schedule will run, or why EventBridge cannot
            except ValueError as exc:
                out.append(f"{what}: {exc}")
            if job.name in seen:
                out.append(f"{what}: declared twice")
            if self.github_app_secret is not None and job.installation_id is None:
                out.append(f"{what}: a GitHub App deployment reads the repository as one of its installations: "
                           "give installation_id")
            seen.add(job.name)
        return out

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> IacCiPipelineProps:
        """Build and validate; raises ``IacCiPipelinePropsError`` listing every problem."""
        names = cls.names()
        known = {k: v for k, v in kwargs.items() if k in names}
        unknown = {k: v for k, v in kwargs.items() if k not in names}
        return cls(**known).validated(unknown=unknown)

    def validated(self, *, unknown: Mapping[str, object] | None = None) -> IacCiPipelineProps:
        """``self`` if valid; else raises ``IacCiPipelinePropsError`` listing every problem, the
        ``unknown`` property names first (with the closest known name)."""
        problems = []
        for key in sorted(unknown or {}):
            close = difflib.get_close_matches(key, self.names(), n=1)
            problems.append(f"unknown property '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        problems.extend(self.problems())
        if problems:
            raise IacCiPipelinePropsError(problems)
        return self

    def problems(self) -> list[str]:
        out: list[str] = []
        out += _prefix_problems("allowed_ssm_prefixes", self.allowed_ssm_prefixes, SSM_PREFIX_PATTERN)
        out += _prefix_problems("allowed_secret_prefixes", self.allowed_secret_prefixes, SECRET_PREFIX_PATTERN)
        if isinstance(self.allowed_role_arns, str):
            out.append("allowed_role_arns must be a sequence of role ARNs, not a single string")
        else:
            for arn in self.allowed_role_arns:
                if not isinstance(arn, str) or not ROLE_ARN_PATTERN.match(arn):
                    out.append(
                        f"allowed_role_arns: '{arn}' is not an IAM role ARN "
                        "(arn:aws:iam::<account>:role/<name>; only * and ? wildcards)"
                    )
        if isinstance(self.allowed_source_buckets, str) or any(
                not hasattr(b, "bucket_name") for b in self.allowed_source_buckets):
            out.append("allowed_source_buckets must be a sequence of buckets (s3.IBucket), "
                       "e.g. s3.Bucket.from_bucket_name(scope, id, name)")
        if self.github_token_secret is not None and self.github_app_secret is not None:
            out.append("github_token_secret and github_app_secret are mutually exclusive: give one")
        credentials = (self.github_token_secret, self.github_app_secret)
        if self.github_webhook_secret is not None and all(c is None for c in credentials):
            out.append("github_webhook_secret needs github_token_secret or github_app_secret "
                       "(to read .iac-ci.yml and report on pull requests)")
        if not str(self.github_api_url).startswith("https://"):
            out.append(f"github_api_url must be an https:// URL, got '{self.github_api_url}'")
        out += _int_problems("packaging_memory_mib", self.packaging_memory_mib, *LAMBDA_MEMORY_MIB)
        out += _int_problems("worker_memory_mib", self.worker_memory_mib, *LAMBDA_MEMORY_MIB)
        out += _int_problems(
            "worker_ephemeral_storage_mib", self.worker_ephemeral_storage_mib, *LAMBDA_EPHEMERAL_STORAGE_MIB
        )
        out += _int_problems("max_source_bytes", self.max_source_bytes, 1, MAX_SOURCE_BYTES)
        out += _int_problems("max_source_files", self.max_source_files, 1, None)
        out += _int_problems("intake_reserved_concurrency", self.intake_reserved_concurrency, 1, None,
                             optional=True)
        out += [f"{p} (the least an SQS event source's MaximumConcurrency accepts)" for p in _int_problems(
            "orchestrator_reserved_concurrency", self.orchestrator_reserved_concurrency, SQS_MAX_CONCURRENCY[0], None,
            optional=True)]
        out += _int_problems("worker_reserved_concurrency", self.worker_reserved_concurrency, 1, None, optional=True)
        out += _int_problems("max_running_per_run", self.max_running_per_run, 1, None, optional=True)
        out += _int_problems("max_running_per_deployment", self.max_running_per_deployment, 1, None, optional=True)
        out += self._policy_problems()
        out += self._schedule_problems()
        out += image_problems(self.images)
        out += self._environment_problems()
        if self.event_bus is not None and not hasattr(self.event_bus, "event_bus_name"):
            out.append("event_bus must be an event bus (events.IEventBus), e.g. "
                       "events.EventBus.from_event_bus_name(scope, id, name)")
        for name in ("run_retention_days", "internal_object_retention_days", "done_object_retention_days"):
            out += _int_problems(name, getattr(self, name), 1, retention.MAX_RETENTION_DAYS)
        out += _int_problems("event_retention_days", self.event_retention_days, 1, retention.MAX_RETENTION_DAYS)
        out += _int_problems("max_run_days", self.max_run_days, 1, retention.MAX_RUN_DAYS)
        if isinstance(self.event_retention_days, int) and isinstance(self.run_retention_days, int) \
                and self.event_retention_days < self.run_retention_days:
            out.append(f"event_retention_days ({self.event_retention_days}) must be at least run_retention_days "
                       f"({self.run_retention_days}): a run's audit trail must outlive the run")
        out += _int_problems("watchdog_grace_seconds", self.watchdog_grace_seconds, 1, MAX_WATCHDOG_GRACE_SECONDS)
        out += _int_problems("api_throttling_rate_limit_per_second", self.api_throttling_rate_limit_per_second, 1,
                             None)
        out += _int_problems("api_throttling_burst_limit", self.api_throttling_burst_limit, 1, None)
        if self.vpc_subnets is not None and self.vpc is None:
            out.append("vpc_subnets is set but vpc is not: pass the vpc the subnets belong to")
        compute = getattr(self.codebuild_compute_type, "value", str(self.codebuild_compute_type))
        if str(compute).startswith("LAMBDA_") or compute in ("ATTRIBUTE_BASED", "CUSTOM_INSTANCE_TYPE"):
            out.append(
                f"codebuild_compute_type {compute} is not supported: CodeBuild orders run for up to 8 hours "
                "on the runtime image; use SMALL, MEDIUM, LARGE, X_LARGE or X2_LARGE (or target: lambda)"
            )
        if self.image_directory is not None and not (Path(self.image_directory) / "Dockerfile").is_file():
            out.append(f"image_directory '{self.image_directory}' has no Dockerfile")
        if getattr(self.architecture, "name", None) not in (ARM64, X86_64):
            out.append("architecture must be lambda_.Architecture.ARM_64 or lambda_.Architecture.X86_64")
        out += [f"{name} must be True or False, got {getattr(self, name)!r}"
                for name in ("dashboard", "tracing") if not isinstance(getattr(self, name), bool)]
        out += self._mtls_problems()
        return out

    def _mtls_problems(self) -> list[str]:
        """The custom domain and its truststore (``api_*``), all at once."""
        out = []
        domain, certificate = self.api_domain_name, self.api_domain_certificate
        if domain is not None and (not isinstance(domain, str) or not DOMAIN_NAME_PATTERN.fullmatch(domain)):
            out.append(f"api_domain_name {domain!r} is not a domain name (lowercase labels of letters, digits and "
                       "'-', e.g. ci.example.com)")
        if domain is not None and certificate is None:
            out.append(f"api_domain_name {domain!r} needs api_domain_certificate (an ACM certificate for it, in "
                       "the stack's region)")
        if certificate is not None and domain is None:
            out.append("api_domain_certificate is set but api_domain_name is not: give the domain it is for")
        if certificate is not None and not hasattr(certificate, "certificate_arn"):
            out.append("api_domain_certificate must be an ACM certificate (acm.ICertificate), e.g. "
                       "acm.Certificate.from_certificate_arn(scope, id, arn)")
        if not isinstance(self.api_mtls_certificates, bool):
            out.append(f"api_mtls_certificates must be True or False, got {self.api_mtls_certificates!r}")
        mtls = domain is not None or self.api_mtls_certificates is True
        bucket = self.api_mtls_truststore_bucket
        if bucket is not None and not hasattr(bucket, "bucket_name"):
            out.append("api_mtls_truststore_bucket must be a bucket (s3.IBucket), e.g. "
                       "s3.Bucket.from_bucket_name(scope, id, name)")
        if bucket is not None and not mtls:
            out.append("api_mtls_truststore_bucket is set but mutual TLS is not: give api_domain_name (or "
                       "api_mtls_certificates=True to prepare it)")
        key = self.api_mtls_truststore_key
        if not isinstance(key, str) or not 0 < len(key) <= 1024 or key.startswith("/"):
            out.append(f"api_mtls_truststore_key must be an S3 object key (1 to 1024 characters, not starting "
                       f"with '/'), got {key!r}")
        if domain is not None and self.github_webhook_secret is not None:
            out.append("api_domain_name and github_webhook_secret exclude each other: with mutual TLS every caller "
                       "presents a client certificate, which GitHub's webhook deliveries cannot")
        if mtls:
            out += self._ca_parameter_problems()
        return out

    def _ca_parameter_problems(self) -> list[str]:
        """No environment may grant jobs a name under ``/iac-ci-engine/``, where the CA keys are."""
        try:
            environments = self.deployment_policy().environments
        except PolicyError:
            return []  # reported by _policy_problems
        probe = f"{CA_PARAMETER_ROOT}stack/ca/root-1"
        where = "allowed_ssm_prefixes" if self.policy is None else "policy environment {name}"
        return [f"{where.format(name=repr(name))}: '{grant}' would let jobs read the mutual TLS CA keys "
                f"(SSM {CA_PARAMETER_ROOT}<stack>/ca/)"
                for name, env in environments.items() for grant in env.ssm
                if grant_matches(grant, probe) or grant.startswith(CA_PARAMETER_ROOT)
                or CA_PARAMETER_ROOT.startswith(grant)]


def _prefix_problems(name: str, prefixes: Sequence[str], pattern: re.Pattern[str]) -> list[str]:
    if isinstance(prefixes, str):
        return [f"{name} must be a sequence of prefixes, not a single string"]
    out = []
    for p in prefixes:
        if not isinstance(p, str) or not p:
            out.append(f"{name}: an empty prefix would allow every name")
        elif p in ("/", "*") or not pattern.match(p):
            out.append(f"{name}: '{p}' is not a literal name prefix (no wildcards; not just '/')")
    return out


def _int_problems(name: str, value: object, low: int, high: int | None, *, optional: bool = False) -> list[str]:
    if optional and value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool):
        return [f"{name} must be an integer{' or None' if optional else ''}, got {value!r}"]
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        return [f"{name} must be {bound}, got {value}"]
    return []
