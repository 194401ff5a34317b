"""Packaging a run (``init_job``): sources, bundles, secrets, orders, then wake the orchestrator.

Safe to run twice for the same run (S3 delivers at least once): the run's status decides what
is left to do, orders are only inserted while nothing can have started, and the wake-up is an
object write the orchestrator treats as a hint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_runtime import sops
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.job.model import Job, Order
from lambda_runtime.job.validate import JobValidationError, parse_job
from lambda_runtime.logs import log_keys, logger
from lambda_runtime.mask_digests import new_salt
from lambda_runtime.masking import redact_credentials
from lambda_runtime.notify.events import Notifier
from lambda_runtime.observability.legs import Leg, Legs, carry
from lambda_runtime.packaging import sources
from lambda_runtime.packaging.bundle import build_bundle
from lambda_runtime.packaging.credentials import CredentialResolver
from lambda_runtime.packaging.errors import PackagingError
from lambda_runtime.packaging.references import check_references
from lambda_runtime.policy.model import ForkPolicy, LockWhen, Policy, TriggerEvent
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import ROLE_KEYS, InputPlacement, Manifest
from lambda_runtime.schema.records import OrderInput, OrderRecord, RunRecord
from lambda_runtime.schema.status import OrderStatus, RunStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.runs import RunStore
from lambda_runtime.summary import run_summary
from lambda_runtime.vcs.base import NoopVcs, VcsProvider, notify

PARALLELISM = 8


@dataclass
class Packager:
    settings: Settings
    clients: AwsClients
    vcs: VcsProvider = field(default_factory=NoopVcs)
    clock: Callable[[], float] = time.time
    notifier: Notifier | None = None  # None: from the settings (``notify``)
    legs: Legs | None = None  # None: X-Ray segments as the environment says (``observability.xray``)

    def __post_init__(self) -> None:
        if self.legs is None:
            self.legs = Legs.from_env(clock=self.clock)
        if self.notifier is None:
            self.notifier = Notifier.from_settings(self.settings, self.clients, clock=self.clock)
        self.store = RunStore(
            self.clients.dynamodb,
            self.settings.orders_table,
            self.settings.events_table,
            clock=self.clock,
            event_ttl_days=self.settings.event_ttl_days,
        )

    def package(self, run_id: str) -> str:
        """Package ``run_id`` as one leg of it; returns what happened (for logs and tests)."""
        assert self.legs is not None
        with log_keys(run_id=run_id), self.legs.leg("packaging", run_id) as leg:
            leg.outcome = self._package(run_id, leg)
            return leg.outcome

    def _package(self, run_id: str, leg: Leg) -> str:
        store = self.store
        run = store.get_run(run_id)
        if run is None:
            logger.warning("job object without a run item; ignoring", extra={"run_id": run_id})
            return "unknown-run"
        leg.bind(run.trace_id)
        status = run.status
        if status not in (RunStatus.ACCEPTED, RunStatus.PACKAGING):
            self._wake(run_id)  # a duplicate delivery after packaging: make sure the orchestrator heard
            return "already-packaged"
        now = self.clock()
        if status is RunStatus.ACCEPTED:
            store.transition_run(run_id, from_status=RunStatus.ACCEPTED, to=RunStatus.PACKAGING,
                                 fields={"packaging_started_at": now})
            run = store.get_run(run_id) or run
        try:
            job = self._load_job(run)
            orders = self._build_and_upload(run, job)
        except PackagingError as exc:
            self._fail(run, str(exc))
            return "failed"
        if not store.put_orders(run_id, orders):
            self._wake(run_id)  # another delivery of this job packaged it first
            return "raced"
        began = store.transition_run(
            run_id,
            from_status=RunStatus.PACKAGING,
            to=RunStatus.RUNNING,
            fields={"order_count": len(orders), "packaged_at": self.clock(), "mask_salt": new_salt().hex()},
            event=("job_started", {"orders": len(orders)}),
            trace_id=run.trace_id,
            flow_id=run.flow_id,
        )
        if began:
            summary = run_summary(store.load(run_id))
            assert self.notifier is not None
            self.notifier.publish_run_started(summary)
            notify(self.vcs, "run_started", summary)
        self._wake(run_id)
        return "packaged" if began else "raced"

    # ---- steps --------------------------------------------------------------------------
    def _load_job(self, run: RunRecord) -> Job:
        """The accepted job, validated again against today's policy, as the trigger that started it."""
        body = self.clients.s3.get_object(Bucket=self.settings.internal_bucket, Key=layout.job_key(run.run_id))["Body"]
        policy = self.settings.deployment_policy()
        withhold = run.untrusted and policy.fork_pull_requests is ForkPolicy.WITHOUT_SECRETS
        try:
            rules = self.settings.validation_policy(TriggerEvent(run.trigger), run.branch,
                                                    withhold_credentials=withhold)
            # a run the pull-request flow accepted carries the fields only that flow may set
            return parse_job(json.loads(body.read()), dataclasses.replace(rules, internal=run.vcs is not None,
                                                                          expanded=True))
        except JobValidationError as exc:  # validated at intake; a policy change since then lands here
            raise PackagingError(str(exc)) from None

    def _build_and_upload(self, run: RunRecord, job: Job) -> list[OrderRecord]:
        run_id = run.run_id
        resolver = CredentialResolver(self.clients)
        work = Path(tempfile.mkdtemp(prefix=f"iac-ci-pkg-{run_id}-"))
        try:
            fetched: dict[str, Path] = {}
            for order in job.orders:  # each distinct source once
                src = job.source_for(order)
                key = sources.source_key(src, job.commit)
                if key not in fetched:
                    dest = work / "sources" / str(len(fetched))
                    sources.fetch(src, dest, clients=self.clients, resolver=resolver, default_ref=job.commit,
                                  limits=sources.SourceLimits.from_settings(self.settings), order=order.name)
                    fetched[key] = dest
            check_references(self.clients, job)
            policy = self.settings.deployment_policy()

            def bundle(order: Order) -> OrderRecord:
                code = fetched[sources.source_key(job.source_for(order), job.commit)]
                return self._bundle_one(run, job, order, code, work, policy)

            with ThreadPoolExecutor(PARALLELISM) as pool:
                items = list(pool.map(carry(bundle), job.orders))  # in this leg: its trace on their log lines
            return items
        except PackagingError:
            raise
        except sops.SopsError as exc:
            raise PackagingError(str(exc)) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _bundle_one(self, run: RunRecord, job: Job, order: Order, code: Path, work: Path, policy: Policy
                    ) -> OrderRecord:
        """The order's code and manifest, and its record with the rules of its environment. Its
        credentials are named here and created only at dispatch (``orchestrator.minting``)."""
        run_id = run.run_id
        if order.dir and not (code / order.dir).is_dir():
            raise PackagingError(f"dir '{order.dir}' does not exist in the source", order=order.name)
        assert self.legs is not None
        leg_trace = str(self.legs.new_trace(run_id))  # the order's own leg: its commands see it (IAC_CI_TRACE_ID)
        manifest = Manifest(
            run_id=run_id,
            order=order.name,
            trace_id=leg_trace,
            flow_id=run.flow_id,
            cmds=order.cmds,
            timeout=order.timeout,
            target=order.target,
            drift=order.drift,
            dir=order.dir,
            env={**job.env, **job.param_env(), **order.env},  # validation refused a name in two of them
            context_env=job.context.env() if job.context else {},
            changed_paths=job.context.changed_paths if job.context else None,
            secret_env=sorted(s.env for s in order.secrets),
            has_role=bool(order.aws_role),
            artifacts=order.artifacts,
            inputs=[InputPlacement(from_order=i.from_.rpartition("/")[2], path=i.path) for i in order.inputs],
            state_bucket=self.settings.state_bucket,
            region=self.settings.region,
            embedded_endpoint=_embedded_endpoint() if self.settings.embedded else None,
        )
        out = build_bundle(manifest, code, None, work / f"bundle-{order.name}.tar.gz")
        self.clients.s3.upload_file(str(out), self.settings.internal_bucket, layout.bundle_key(run_id, order.name))
        out.unlink(missing_ok=True)
        return OrderRecord(
            name=order.name,
            status=OrderStatus.QUEUED,
            target=order.target,
            timeout=order.timeout,
            depends_on=tuple(dict.fromkeys(order.depends_on)),
            must_succeed=order.must_succeed,
            has_artifacts=bool(order.artifacts),
            inputs=tuple(OrderInput(i.from_.rpartition("/")[2], i.path, _input_run(job, i.from_))
                         for i in order.inputs),
            attempt=0,
            command=order.command,
            lock=_lock(run, job, order, policy),
            apply_requirements=tuple(_requirements(order, policy)),
            required_reviews=_required_reviews(order, policy),
            masked_tokens=len(order.secrets) + (len(ROLE_KEYS) if order.aws_role else 0),
            secret_refs=tuple(s.model_dump(exclude_none=True) for s in order.secrets),
            aws_role=order.aws_role,
            run_if=order.run_if,
            drift=order.drift,
            group=order.group,
            fail_fast=order.fail_fast,
            image=self._image(order),
            privileged=order.privileged,
            trace=leg_trace,
            **gate_fields(run, order, policy),
        )

    def _image(self, order: Order) -> str | None:
        """The image URI the order runs on (validated at intake; checked again against today's list)."""
        if order.image is None:
            return None
        found = self.settings.image_allow_list().resolve(order.image)
        if found is None:
            raise PackagingError(f"image '{order.image[:200]}' is no longer allowed by this deployment",
                                 order=order.name)
        return found[0]

    def _fail(self, run: RunRecord, message: str) -> None:
        """The run becomes ``packaging_failed`` with no orders; the orchestrator finalizes it."""
        message = redact_credentials(message)
        logger.warning("packaging failed", extra={"run_id": run.run_id, "error": message})
        self.store.transition_run(
            run.run_id,
            from_status=RunStatus.PACKAGING,
            to=RunStatus.PACKAGING_FAILED,
            fields={"order_count": 0, "packaging_error": message},
        )
        self._wake(run.run_id)

    def _wake(self, run_id: str) -> None:
        self.clients.s3.put_object(
            Bucket=self.settings.internal_bucket, Key=layout.control_key(run_id, layout.SIGNAL_PACKAGED), Body=b"{}"
        )


def gate_fields(run: RunRecord, order: Order, policy: Policy) -> dict[str, Any]:
    """The rules of the order's environment, fixed on its record for the planner. A fork's or
    an untrusted author's pull request under ``on_approval`` makes every order that gets
    credentials wait for at least one approval."""
    found = policy.environment_for(order.environment)
    name, env = found if found is not None else (order.environment, None)
    needed = env.approvals_needed if env is not None else 0
    wait = env.wait_seconds if env is not None else 0
    if run.untrusted and policy.fork_pull_requests is ForkPolicy.ON_APPROVAL and (order.secrets or order.aws_role):
        needed = max(needed, 1)
    return {"environment": name, "approvals_needed": needed, "wait_seconds": wait}


def _input_run(job: Job, source: str) -> str | None:
    """The run an input's artifact comes from: the plan run for an order not in this (apply) run,
    the upstream run for ``<job>/<order>``."""
    if "/" in source and job.upstream is not None:
        return job.upstream.run_id
    if job.plan_run is not None and source not in {o.name for o in job.orders}:
        return job.plan_run.run_id
    return None


def _lock(run: RunRecord, job: Job, order: Order, policy: Policy) -> str | None:
    """``lock: on_apply`` lets other pull requests plan a dir while one holds it; only applies lock.
    A merge queue's run takes none: its commit is the queued pull requests', which hold them."""
    if run.trigger == TriggerEvent.MERGE_GROUP.value:
        return None
    if order.command != "apply" and policy.pull_requests.lock is not LockWhen.ON_PLAN:
        return None
    return order.lock_name(job.repo, pull_request=job.pr_number is not None)


def _requirements(order: Order, policy: Policy) -> list[str]:
    """An apply order's requirements: its environment's, plus its own (an order can add, not remove)."""
    if order.command != "apply":
        return []
    found = policy.environment_for(order.environment)
    env = [r.value for r in found[1].apply_requirements] if found else []
    return list(dict.fromkeys([*env, *order.apply_requirements]))


def _required_reviews(order: Order, policy: Policy) -> int:
    found = policy.environment_for(order.environment)
    env = found[1].required_reviews if found else 1
    return max(env, order.required_reviews or 0)


def _embedded_endpoint() -> str | None:
    import os

    return os.environ.get("AWS_ENDPOINT_URL")


__all__ = ["Packager"]
