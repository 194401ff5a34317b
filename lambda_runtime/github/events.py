"""What a GitHub event starts (runs in the packaging function): a plan, an apply, a cancel, a
released lock, a reviewer's decision, or a reply.

The pull request's life:

- ``opened``, ``synchronize`` (a push), ``reopened``, ``ready_for_review``: the plan orders whose
  files changed run on the head commit (``github.selection``). A push first cancels the pull
  request's runs still in flight: queued orders are cancelled, an apply already running finishes.
  A draft runs nothing (``pull_requests.drafts`` in the policy), and ``reopened`` only plans.
- ``/iac-ci ...`` comments (``github.comment_commands``): plan, apply, unlock, cancel, run,
  approve, reject, help.
- ``closed``: its runs in flight are cancelled. Unmerged, its locks are released now. Merged, the
  apply orders with ``apply_on: merge`` whose files changed run on the merge commit, from the base
  branch's config (the plan orders they depend on run again first), and the locks are released
  when that run ends.
- ``merge_group`` ``checks_requested``: the plan orders the group's changes select run on the
  group's head commit, whose status the queue waits for (success at once when none is selected).
- ``check_run`` ``rerequested`` (GitHub's "Re-run" button, GitHub App only): plans again.

Trust. A pull request runs on its own only when its head is a branch of the repository itself and
its author's ``author_association`` is one the policy trusts (a bot is no exception). Anything
else (a fork, an outside contributor, ``dependabot[bot]``) runs nothing: its config is not read,
its code is not fetched, no job exists. It gets one comment per head commit saying why, and what
``fork_pull_requests`` lets a collaborator do (``/iac-ci run`` or ``/iac-ci plan``):
``never`` nothing; ``without_secrets`` a plan with no credentials at all; ``on_approval`` a plan
where every order that would receive credentials waits for an approval. ``/iac-ci apply`` never
runs for an untrusted pull request. Once someone with write permission merges one, its change is
the base branch's: the merge's ``apply_on: merge`` orders run from the base branch's config.

Config. ``.iac-ci.yml`` at the commit that runs (``github.repo_config``); the repository at that
commit is every order's default source. An invalid file gets one comment listing every problem
and a failing status, and no run. GitHub errors: a transient one (5xx, rate limits) is retried by
the queue, up to ``MAX_PROCESSING_ATTEMPTS``; a permanent one (another 4xx) marks the delivery
``failed`` at once, with a failing status saying why where one can be written, so GitHub's
"Redeliver" processes it again once the cause is fixed.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lambda_runtime.approvals.logic import Approvals
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github import repo_config, selection
from lambda_runtime.github.comment import status_context
from lambda_runtime.github.deliveries import MAX_PROCESSING_ATTEMPTS, Deliveries
from lambda_runtime.github.pr_runs import PrRuns
from lambda_runtime.job import matrix
from lambda_runtime.job.model import Job
from lambda_runtime.job.validate import JobValidationError, Problem, parse_job
from lambda_runtime.logs import logger
from lambda_runtime.policy.model import ForkPolicy, Policy, TriggerEvent
from lambda_runtime.schema import layout
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance
from lambda_runtime.store.cancel import request_cancel
from lambda_runtime.store.pr_locks import Holder, PrLocks

if TYPE_CHECKING:  # PyGithub is imported by whoever builds the provider, not by this module
    from lambda_runtime.github.provider import GitHubVcs

# the events a plan answers to (``when.events``) and the policy event its environments see
PLAN_EVENTS = {"opened": TriggerEvent.PULL_REQUEST, "synchronize": TriggerEvent.PULL_REQUEST,
               "reopened": TriggerEvent.PULL_REQUEST, "ready_for_review": TriggerEvent.PULL_REQUEST,
               "comment": TriggerEvent.COMMENT, "merge_group": TriggerEvent.MERGE_GROUP}


@dataclass(frozen=True)
class PullRequest:
    """What iac-ci reads of a pull request (a webhook's ``pull_request`` or ``GET /pulls/{n}``)."""

    repo: str  # the base repository, owner/name
    number: int
    head_sha: str
    head_repo: str | None  # None when the fork was deleted
    clone_url: str | None
    base_ref: str
    base_sha: str | None
    author: str  # the login as a job's username may spell it (what prevent_self_review compares)
    login: str  # the login as GitHub spells it
    author_type: str
    association: str
    state: str
    draft: bool = False
    merged: bool = False
    merge_sha: str | None = None
    base_clone_url: str | None = None
    url: str | None = None

    @classmethod
    def from_payload(cls, repo: str, pr: dict[str, Any]) -> PullRequest:
        head, base = pr.get("head") or {}, pr.get("base") or {}
        head_repo, base_repo = head.get("repo") or {}, base.get("repo") or {}
        user = pr.get("user") or {}
        return cls(repo=repo, number=int(pr["number"]), head_sha=str(head.get("sha") or ""),
                   head_repo=head_repo.get("full_name"), clone_url=head_repo.get("clone_url"),
                   base_ref=str(base.get("ref") or ""), base_sha=base.get("sha"),
                   author=_login(pr), login=str(user.get("login") or "?")[:64],
                   author_type=str(user.get("type") or "User"),
                   association=str(pr.get("author_association") or "NONE").upper(),
                   state=str(pr.get("state") or "open"), draft=bool(pr.get("draft")),
                   merged=bool(pr.get("merged")), merge_sha=pr.get("merge_commit_sha"),
                   base_clone_url=base_repo.get("clone_url"), url=pr.get("html_url"))

    def untrusted_reasons(self, policy: Policy) -> list[str]:
        """Why this pull request does not run on its own (empty: it does)."""
        reasons = []
        if not self.head_repo or self.head_repo.lower() != self.repo.lower():
            reasons.append(f"it comes from a fork (`{self.head_repo or 'a deleted repository'}`)")
        if not policy.trusts(self.association):
            who = f"`{self.login}`" + (" (a bot)" if self.author_type == "Bot" else "")
            reasons.append(f"its author {who} is `{self.association}` on this repository (trusted: "
                           f"{', '.join(policy.trusted_associations) or 'nobody'})")
        return reasons

    @property
    def holder(self) -> Holder:
        return Holder.pull_request(self.repo, self.number, self.url)


@dataclass(frozen=True)
class Trigger:
    """What to run: one command's orders, selected by event and changed files (or by name)."""

    command: selection.Command
    event: str  # a ``when.events`` value
    policy_event: TriggerEvent
    commit: str  # the commit that runs
    changed: Sequence[str] | None
    names: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    apply_on: str | None = None  # apply: "command" or "merge"
    head_config: bool = True  # the pull request's own config (protected orders from the base)
    plan_run: dict[str, Any] | None = None  # apply: {"run_id", "commit", "orders": {name: status}}
    skip: frozenset[str] = frozenset()  # apply: orders already applied at this commit
    release_locks: bool = False
    untrusted: bool = False
    withhold: bool = False
    pr_number: int | None = None  # None: a merge group's run, which has no pull request
    params: tuple[tuple[str, str], ...] = ()  # ``-p NAME=VALUE`` of a comment command


@dataclass
class Started:
    outcome: str
    fields: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # what a command's reply says about it


@dataclass
class GitHubEvents:
    settings: Settings
    clients: AwsClients
    vcs: GitHubVcs
    acceptance: Acceptance
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        s = self.settings
        self.deliveries = Deliveries(self.clients.dynamodb, s.idempotency_table)
        self.pr_runs = PrRuns(self.clients.dynamodb, s.idempotency_table, clock=self.clock)
        self.approvals = Approvals(self.clients, self.acceptance.store, s.internal_bucket,
                                   policy=s.deployment_policy, clock=self.clock)
        self.locks = PrLocks(self.clients.dynamodb, s.locks_table, s.events_table, clock=self.clock,
                             event_ttl_days=s.event_ttl_days)

    @property
    def policy(self) -> Policy:
        return self.settings.deployment_policy()

    def handle(self, delivery: str, *, internal: bool = False) -> str:
        """Process one queued delivery once; returns its outcome (for logs and tests). ``internal``:
        one iac-ci wrote itself (a schedule's firing, a run's end), never one from GitHub."""
        if internal:  # queued, unless processed already (its id names its body: a firing, a run's end)
            self.deliveries.record(delivery, hashlib.sha256(f"internal/{delivery}".encode()).hexdigest())
        if not self.deliveries.claim(delivery):
            return "duplicate"
        event: dict[str, Any] = {}
        try:
            event = self._event(delivery, internal=internal)
            started = self._internal(delivery, event) if internal else self._process(delivery, event)
        except Exception as exc:
            from lambda_runtime.github.provider import is_permanent

            error = f"{type(exc).__name__}: {exc}"
            if is_permanent(exc):  # retrying cannot help: failed now, so GitHub's Redeliver starts it again
                logger.warning("github event failed: permanent error", extra={"delivery": delivery, "error": error})
                self.deliveries.finish(delivery, "failed", last_error=error[:500])
                self._report_failure(event, exc)
                return "failed"
            attempts = self.deliveries.failed_attempt(delivery, error)
            if attempts >= MAX_PROCESSING_ATTEMPTS:  # recorded as failed: GitHub's redelivery may start it again
                logger.exception("github event failed for good", extra={"delivery": delivery, "attempts": attempts})
                self._report_failure(event, exc)
                return "failed"
            raise  # the queue's retry may claim it again
        self.deliveries.finish(delivery, started.outcome, **started.fields)
        return started.outcome

    def _event(self, delivery: str, *, internal: bool = False) -> dict[str, Any]:
        raw = self.clients.s3.get_object(Bucket=self.settings.internal_bucket, Key=layout.webhook_key(
            layout.INTERNAL_PROVIDER if internal else "github", delivery))["Body"].read()
        event: dict[str, Any] = json.loads(raw)
        return event

    def _internal(self, delivery: str, event: dict[str, Any]) -> Started:
        from lambda_runtime.github.pipeline_events import PipelineEvents

        kind = event.get("iac_ci")
        if kind == "schedule":
            return PipelineEvents(self).schedule(delivery, event)
        if kind == "after":
            return PipelineEvents(self).after(delivery, event)
        return Started("ignored")

    def _process(self, delivery: str, event: dict[str, Any]) -> Started:
        from lambda_runtime.github.comment_commands import CommentCommands

        installation = (event.get("installation") or {}).get("id")
        repo = event["repository"]["full_name"]
        if "comment" in event and "issue" in event:
            return CommentCommands(self).handle(delivery, repo, event, installation)
        if "merge_group" in event:
            return self._merge_group(delivery, event["repository"], event["merge_group"], installation)
        if "check_run" in event:
            return CommentCommands(self).rerun(delivery, repo, event, installation)
        if "pusher" in event and "ref" in event:
            from lambda_runtime.github.pipeline_events import PipelineEvents

            return PipelineEvents(self).push(delivery, event, installation)
        pr = PullRequest.from_payload(repo, event["pull_request"])
        action = str(event.get("action") or "")
        if action == "closed":
            return self._closed(delivery, pr, installation)
        if action == "converted_to_draft":
            if self.policy.pull_requests.drafts:
                return Started("ignored")
            return Started("draft", {"cancelled": len(self.cancel_runs(pr, delivery))})
        if pr.draft and not self.policy.pull_requests.drafts:
            logger.info("draft pull request; nothing runs", extra={"repo": repo, "pr": pr.number})
            return Started("draft")
        reasons = pr.untrusted_reasons(self.policy)
        if reasons:
            self.vcs.comment_once(repo, pr.number, untrusted_comment(pr, reasons, self.policy), installation)
            logger.info("untrusted pull request; nothing runs", extra={"repo": repo, "pr": pr.number,
                                                                       "reasons": reasons})
            return Started("untrusted", {"reasons": len(reasons)})
        return self.plan(delivery, pr, installation, event=action)

    # ---- the pull request's life ------------------------------------------------------------
    def plan(self, delivery: str, pr: PullRequest, installation: int | None, *, event: str,
             names: tuple[str, ...] = (), dirs: tuple[str, ...] = (), untrusted: bool = False,
             withhold: bool = False, params: tuple[tuple[str, str], ...] = ()) -> Started:
        """Plan the head commit; the pull request's runs still in flight are superseded first."""
        changed = self.vcs.changed_files(pr.repo, pr.number, installation)  # named orders get the list too
        self.cancel_runs(pr, delivery)
        return self.start(delivery, pr, installation, Trigger(
            command="plan", event=event, policy_event=PLAN_EVENTS.get(event, TriggerEvent.PULL_REQUEST),
            commit=pr.head_sha, changed=changed, names=names, dirs=dirs, untrusted=untrusted, withhold=withhold,
            pr_number=pr.number, params=params))

    def _closed(self, delivery: str, pr: PullRequest, installation: int | None) -> Started:
        cancelled = self.cancel_runs(pr, delivery)
        if pr.merged and pr.merge_sha:
            started = self.start(delivery, pr, installation, Trigger(
                command="apply", event="merge", policy_event=TriggerEvent.MERGE, commit=pr.merge_sha,
                changed=self.vcs.changed_files(pr.repo, pr.number, installation), apply_on="merge",
                head_config=False, release_locks=True, pr_number=pr.number))
            if started.outcome == "accepted":  # the locks go when the merged change is applied
                return replace(started, fields={**started.fields, "cancelled": len(cancelled)})
        released = self.locks.release_all(pr.holder.key, by="github",
                                          reason="pull request merged" if pr.merged else "pull request closed")
        return Started("closed", {"cancelled": len(cancelled), "released": len(released)})

    def _merge_group(self, delivery: str, repository: dict[str, Any], group: dict[str, Any],
                     installation: int | None) -> Started:
        """The merge queue's group: its commit is the base plus the queued pull requests, all of them
        reviewed and queued by people with write permission, so it runs like a push to the base."""
        repo = str(repository["full_name"])
        head, base = str(group["head_sha"]), str(group.get("base_sha") or "")
        base_ref = str(group.get("base_ref") or "").removeprefix("refs/heads/")
        clone = str(repository.get("clone_url") or f"https://github.com/{repo}.git")
        pr = PullRequest(repo=repo, number=0, head_sha=head, head_repo=repo, clone_url=clone, base_ref=base_ref,
                         base_sha=base, author="github-merge-queue", login="github-merge-queue", author_type="Bot",
                         association="MEMBER", state="open", base_clone_url=clone)
        changed = self.vcs.compare_files(repo, base, head, installation) if base else None
        return self.start(delivery, pr, installation, Trigger(
            command="plan", event="merge_group", policy_event=TriggerEvent.MERGE_GROUP, commit=head,
            changed=changed, head_config=False))

    def cancel_runs(self, pr: PullRequest, delivery: str) -> list[str]:
        """Cancel the pull request's runs in flight (an apply already running finishes), except the
        one this delivery started (a retried delivery must not cancel its own run)."""
        out = []
        for ref in self.pr_runs.recent(pr.repo, pr.number):
            snap = self.acceptance.store.load(ref.run_id)
            run = snap.run
            if run is None or run.finalized or run.status.terminal or run.cancel_requested:
                continue
            if run.idempotency_key == f"github-{delivery}":
                continue
            if request_cancel(self.acceptance.store, self.clients.s3, bucket=self.settings.internal_bucket,
                              run_id=ref.run_id, now=self.clock(), stop_applies=False):
                out.append(ref.run_id)
        if out:
            logger.info("superseded runs cancelled", extra={"repo": pr.repo, "pr": pr.number, "runs": out})
        return out

    # ---- starting a run ---------------------------------------------------------------------
    def start(self, delivery: str, pr: PullRequest, installation: int | None, trig: Trigger) -> Started:
        repo = pr.repo
        text = self.vcs.read_file(repo, self.settings.github_config_file, trig.commit, installation)
        if text is None:
            logger.info("no config file in the repository; no job", extra={"repo": repo, "commit": trig.commit})
            return Started("no-config", lines=[f"`{self.settings.github_config_file}` does not exist at "
                                               f"`{trig.commit[:12]}`; nothing to run."])
        config, problems = repo_config.parse(text)
        jobs, more = repo_config.jobs_of(config, repo)
        problems += more
        pr_job = repo_config.pull_request_job(jobs)
        if pr_job is not None and not problems and not repo_config.pull_request_job(jobs, pr.base_ref):
            return Started("nothing", {"command": trig.command}, [
                f"`{pr_job.name}` answers to pull requests into other branches than `{pr.base_ref}`"])
        if pr_job is None and not problems:
            return Started("no-config", lines=[f"no job of `{self.settings.github_config_file}` answers to pull "
                                               "requests (on: pull_request)"])
        config = pr_job.config if pr_job is not None else {}
        name = pr_job.name if pr_job is not None else repo_config.flow_label(repo)
        rules = replace(self.settings.validation_policy(trig.policy_event, pr.base_ref,
                                                        withhold_credentials=trig.withhold), internal=True)
        note, whole = "", None
        try:
            doc, note = self._job_document(config, pr, trig, installation)
            whole = parse_job(doc, replace(rules, check_rules=False))
        except JobValidationError as exc:
            problems += exc.problems
        if problems or whole is None:
            return self._invalid(delivery, pr, trig, installation, str(name), problems)
        chosen = selection.select(whole, command=trig.command, event=trig.event, changed=trig.changed,
                                  names=trig.names, dirs=trig.dirs, apply_on=trig.apply_on,
                                  default_apply_on=self.policy.pull_requests.apply_on.value)
        lines = [f"no {trig.command} order is named `{u}`" for u in chosen.unknown]
        names, refused = self._runnable(whole, chosen, trig)
        lines += refused
        if not names:
            return self._nothing(pr, trig, installation, whole, lines)
        try:
            job = parse_job(self._run_document(doc, whole, names, chosen, trig, pr), rules)
        except JobValidationError as exc:
            return self._invalid(delivery, pr, trig, installation, whole.name, exc.problems)
        ack = self.acceptance.accept_job(job, idempotency_key=f"github-{delivery}", run_fields={
            "vcs": "github", "installation_id": installation, "trigger": trig.policy_event.value,
            "branch": pr.base_ref, "untrusted": trig.untrusted, "command": trig.command,
            "plan_run_id": (trig.plan_run or {}).get("run_id"),
            "lock_holder": pr.holder.key if trig.pr_number else None, "pr_url": pr.url,
            "release_locks": trig.release_locks, "lock_ttl_seconds": self.policy.pull_requests.lock_ttl_seconds})
        if trig.pr_number:
            self.pr_runs.add(repo, pr.number, ack["run_id"], commit=trig.commit, command=trig.command)
            if note:
                self.vcs.comment_once(repo, pr.number, note, installation)
        return Started("accepted", {"run_id": ack["run_id"], "orders": len(names)}, lines)

    def _runnable(self, whole: Job, chosen: selection.Selection, trig: Trigger) -> tuple[list[str], list[str]]:
        """The selected orders that can run, and why the others cannot: an apply needs its plan
        orders to have succeeded in the plan run, and does not run twice for one commit."""
        if trig.command != "apply" or trig.plan_run is None:
            return list(chosen.names), []
        plan = trig.plan_run["orders"]
        by_name = {o.name: o for o in whole.orders}
        out, refused = [], []
        for n in chosen.names:
            if n in trig.skip:
                refused.append(f"`{n}` was applied already at `{trig.commit[:12]}` (push a new commit to apply again)")
                continue
            missing = [d for d in by_name[n].depends_on if by_name[d].command == "plan"
                       and plan.get(d) != OrderStatus.SUCCEEDED.value]
            if missing:
                refused.append(f"`{n}` needs " + ", ".join(
                    f"plan `{d}` ({plan.get(d) or 'not in the plan run'})" for d in missing)
                    + f" of run `{trig.plan_run['run_id']}` to have succeeded")
                continue
            out.append(n)
        blocked = set(chosen.names) - set(out) - set(trig.skip)
        changed = True
        while changed:  # an apply whose apply dependency cannot run cannot run either (applied ones are fine)
            changed = False
            for n in list(out):
                cause = next((d for d in by_name[n].depends_on if d in blocked), None)
                if cause is not None:
                    out.remove(n)
                    blocked.add(n)
                    refused.append(f"`{n}` needs apply `{cause}`, which cannot run")
                    changed = True
        return out, refused

    def _job_document(self, config: dict[str, Any], pr: PullRequest, trig: Trigger, installation: int | None
                      ) -> tuple[dict[str, Any], str]:
        orders, env, note = config.get("orders"), config.get("env"), ""
        if trig.head_config and isinstance(orders, list) and any(repo_config._protected(o, self.policy)
                                                                 for o in orders):
            base = self._base_config(pr, installation)
            orders, env, replaced, dropped = repo_config.protected_from_base(orders, env, base, self.policy)
            if replaced or dropped:
                note = repo_config.protected_note(pr, replaced, dropped, self.settings.github_config_file,
                                                  base is not None)
        url = pr.clone_url if trig.head_config else (pr.base_clone_url or pr.clone_url)
        if not url:
            raise JobValidationError([Problem(None, "source", "the pull request's head repository no longer exists")])
        git = self.git_source(url, trig.commit)
        doc: dict[str, Any] = {"name": config.get("name") or repo_config.flow_label(pr.repo), "username": pr.author,
                               "repo": pr.repo, "commit": trig.commit, "source": {"git": git}, "orders": orders}
        if trig.pr_number:
            doc["pr_number"] = trig.pr_number
        if env is not None:
            doc["env"] = env
        for key in ("timeout", "params"):
            if key in config:
                doc[key] = config[key]
        if trig.params:
            doc["param_values"] = dict(trig.params)
        doc, found = matrix.expand_written(doc)
        if found:
            raise JobValidationError([Problem(o, f, m) for o, f, m in found])
        return doc, note

    def git_source(self, url: str, commit: str) -> dict[str, Any]:
        """A run's source: the repository at the commit, cloned with the deployment's own token."""
        git: dict[str, Any] = {"url": url, "ref": commit}
        if self.settings.github_token_secret_id:
            git["token"] = {"secret": self.settings.github_token_secret_id}
        return git

    def _run_document(self, doc: dict[str, Any], whole: Job, names: list[str], chosen: selection.Selection,
                      trig: Trigger, pr: PullRequest) -> dict[str, Any]:
        """The run's job: the selected orders only, their dependencies on orders not in the run
        dropped (an apply's plan orders ran in the plan run), plus what iac-ci itself sets."""
        keep = set(names)
        if trig.command == "apply" and trig.plan_run is None:  # on merge: plan again, then apply
            keep |= set(chosen.plan_dependencies)
        orders = []
        for raw in doc["orders"]:
            if isinstance(raw, dict) and raw.get("name") in keep:
                deps = raw.get("depends_on")
                orders.append({**raw, "depends_on": [d for d in deps if d in keep]} if isinstance(deps, list) else raw)
        out = {**doc, "orders": orders, "context": {
            "repo": pr.repo, "pr_number": trig.pr_number, "head_sha": trig.commit,
            "base_ref": pr.base_ref or None, "base_sha": pr.base_sha, "event": trig.event, "command": trig.command,
            "changed_paths": list(trig.changed)[:3000] if trig.changed is not None else None}}
        if trig.plan_run is not None:
            out["plan_run"] = {"run_id": trig.plan_run["run_id"], "commit": trig.plan_run["commit"],
                               "orders": sorted(trig.plan_run["orders"])}
        return out

    def _base_config(self, pr: PullRequest, installation: int | None) -> dict[str, Any] | None:
        """The base branch's config at the PR's base commit; None when it has none (or an unreadable one)."""
        ref = pr.base_sha or pr.base_ref
        text = self.vcs.read_file(pr.repo, self.settings.github_config_file, ref, installation) if ref else None
        if text is None:
            return None
        config, problems = repo_config.parse(text)
        jobs, more = repo_config.jobs_of(config, pr.repo)
        job = repo_config.pull_request_job(jobs)
        if problems or more or job is None:
            logger.warning("the base branch's config is invalid; protected orders are dropped",
                           extra={"repo": pr.repo, "ref": ref})
            return None
        return job.config

    # ---- outcomes without a run -----------------------------------------------------------
    def _invalid(self, delivery: str, pr: PullRequest, trig: Trigger, installation: int | None, name: str,
                 problems: list[Problem]) -> Started:
        path = self.settings.github_config_file
        title = ("asks for credentials, and this pull request runs without any "
                 "(`fork_pull_requests: without_secrets`)") if trig.withhold and _only_withheld(problems) else \
            "is invalid"
        if trig.pr_number:
            self.vcs.comment_once(pr.repo, pr.number, repo_config.config_problems_comment(
                path, trig.commit, problems, title=title, key=delivery), installation)
        self.vcs.set_status(pr.repo, trig.commit, "failure", f"{path} {title[:60]}: {len(problems)} problem(s)",
                            context=status_context(name, trig.command), installation_id=installation)
        return Started("invalid", {"problems": len(problems)},
                       [f"`{path}` at `{trig.commit[:12]}` {title}: {len(problems)} problem(s), listed in a comment"])

    def _nothing(self, pr: PullRequest, trig: Trigger, installation: int | None, whole: Job, lines: list[str]
                 ) -> Started:
        """No order selected: no run. A plan still answers the status a branch rule or a merge queue
        may require, so a change that touches no order is not stuck waiting for it."""
        if trig.command == "plan":
            self.vcs.set_status(pr.repo, trig.commit, "success", "nothing to plan: no order's files changed",
                                context=status_context(whole.name, "plan"), installation_id=installation)
        if trig.release_locks:
            self.locks.release_all(pr.holder.key, by="github", reason="pull request merged")
        what = "no plan order's files changed" if trig.command == "plan" else \
            f"no apply order (`apply_on: {trig.apply_on}`) is selected by this change"
        return Started("nothing", {"command": trig.command}, lines or [f"nothing to run: {what}"])

    def _report_failure(self, event: dict[str, Any], exc: BaseException) -> None:
        """A failing status on the commit, when the event names one and the status can be written."""
        try:
            repo = event["repository"]["full_name"]
            sha = ((event.get("pull_request") or {}).get("head") or {}).get("sha") or \
                (event.get("merge_group") or {}).get("head_sha")
            if not sha:
                return
            status = getattr(exc, "status", None)
            why = f"GitHub answered {status}" if status else type(exc).__name__
            self.vcs.set_status(repo, str(sha), "error", f"iac-ci could not process this event: {why}"[:140],
                                context=status_context(repo_config.flow_label(repo), "plan"),
                                installation_id=(event.get("installation") or {}).get("id"))
        except Exception:  # the status is a courtesy; the delivery is failed either way
            logger.exception("could not report the failure on the commit")


def untrusted_comment(pr: PullRequest, reasons: list[str], policy: Policy) -> str:
    """The one explanation on an untrusted pull request, per head commit (its first line is the marker)."""
    lines = [f"<!-- iac-ci:untrusted:{pr.head_sha} -->", "### ⏸️ iac-ci did not run this pull request", "",
             "iac-ci runs nothing for this pull request on its own, because " + " and ".join(reasons) + ".",
             f"Nothing of commit `{pr.head_sha[:12]}` was read, fetched or run.", ""]
    mode = policy.fork_pull_requests
    if mode is ForkPolicy.NEVER:
        lines.append("This deployment does not run pull requests from forks or untrusted authors at all "
                     "(`fork_pull_requests: never`): it will not run here, not even after `/iac-ci run`. "
                     "A collaborator can push the change to a branch of this repository instead.")
    elif mode is ForkPolicy.WITHOUT_SECRETS:
        lines.append("A collaborator with write permission who has reviewed the change can start it with "
                     "`/iac-ci run` (or `/iac-ci run <sha>` to pin the commit reviewed). It then runs without any "
                     "secret or AWS role (`fork_pull_requests: without_secrets`); an order asking for one is refused.")
    else:
        lines.append("A collaborator with write permission who has reviewed the change can start it with "
                     "`/iac-ci run` (or `/iac-ci run <sha>` to pin the commit reviewed). Every order that would "
                     "receive a secret or an AWS role then waits for `/iac-ci approve` "
                     "(`fork_pull_requests: on_approval`).")
    return "\n".join(lines)


def _only_withheld(problems: list[Problem]) -> bool:
    return all("runs without credentials" in p.message for p in problems)


def _login(pr: dict[str, Any]) -> str:
    login = str((pr.get("user") or {}).get("login") or "github")
    return re.sub(r"[^A-Za-z0-9_.@-]", "-", login)[:64]


