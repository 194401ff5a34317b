"""What starts a pipeline run (``on: push | schedule | after`` in ``.iac-ci.yml``), in the packaging
function, next to the pull-request flow of ``github.events``.

- ``push`` (a GitHub webhook): every job whose ``on.push`` matches the ref (branch or tag globs)
  and, for a branch, whose ``paths`` a changed file matches (the files between the push's
  ``before`` and ``after``; a new branch's changes are unknown, so it runs). The run is the pushed
  commit, from that commit's config; the environments' event and branch rules apply (``push``,
  the branch), as for any run. A push to the default branch also reconciles the repository's
  schedules and ``after`` subscriptions with its config.
- ``schedule`` (an EventBridge Scheduler firing, ``pipelines.schedules``): the job on the
  default branch's head, if its config still has that cron.
- ``after`` (written by the orchestrator when a GitHub run ends): every job subscribed to the
  run's job and status (``pipelines.chains``), started on its own repository's default branch,
  with the finished run as its ``upstream`` (its artifacts are the inputs ``<job>/<order>``).

Pushes come from people with write permission (GitHub sends none for forks), schedules and
chains from the default branch's config: none of them is a pull request's untrusted change.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lambda_runtime.github import repo_config, selection
from lambda_runtime.github.comment import status_context
from lambda_runtime.job import matrix
from lambda_runtime.job.validate import JobValidationError, Problem, parse_job
from lambda_runtime.logs import logger
from lambda_runtime.pipelines.chains import MAX_CHAIN, Chains, Subscriber, Subscription, node
from lambda_runtime.pipelines.schedules import ScheduledJob, Schedules
from lambda_runtime.policy.model import TriggerEvent

if TYPE_CHECKING:
    from lambda_runtime.github.events import GitHubEvents, Started

ZERO_SHA = re.compile(r"^0+$")
PIPELINES_CONTEXT = "iac-ci/pipelines"


@dataclass(frozen=True)
class Where:
    """The commit a pipeline run runs, and how iac-ci reaches it."""

    repo: str
    commit: str
    clone_url: str
    branch: str | None  # None for a tag
    installation: int | None
    ref: str | None = None  # refs/heads/<branch> or refs/tags/<tag>

    @property
    def full_ref(self) -> str | None:
        return self.ref or (f"refs/heads/{self.branch}" if self.branch else None)


class PipelineEvents:
    def __init__(self, events: GitHubEvents):
        self.events = events
        s = events.settings
        self.chains = Chains(events.clients.dynamodb, s.idempotency_table)
        self.schedules = Schedules(events.clients.scheduler, s.schedule_group, s.schedule_queue_arn,
                                   s.scheduler_role_arn) if s.schedules_enabled else None

    # ---- triggers ---------------------------------------------------------------------------------
    def push(self, delivery: str, event: dict[str, Any], installation: int | None) -> Started:
        from lambda_runtime.github.events import Started

        repository = event["repository"]
        repo, ref, before, after = str(repository["full_name"]), str(event["ref"]), str(event.get("before") or ""), \
            str(event["after"])
        if event.get("deleted") or ZERO_SHA.match(after):
            return Started("ignored", {"reason": "a deleted ref"})
        branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
        where = Where(repo, after, str(repository.get("clone_url") or ""), branch, installation, ref)
        jobs, problems = self._jobs(where)
        if jobs is None:
            return Started("no-config")
        default = str(repository.get("default_branch") or repository.get("master_branch") or "")
        reconciled = self.reconcile(where, jobs, problems) if branch and branch == default else None
        if problems:
            return self._invalid(where, problems)
        chosen = [j for j in jobs if j.on.push and j.on.push.matches_ref(ref)]
        changed = None
        if chosen and branch and not ZERO_SHA.match(before or "0") and not event.get("forced"):
            changed = self.events.vcs.compare_files(repo, before, after, installation)
        pusher = str((event.get("pusher") or {}).get("name") or (event.get("sender") or {}).get("login") or "github")
        started: list[str] = []
        lines: list[str] = []
        for job in chosen:
            assert job.on.push is not None
            if not job.on.push.matches_paths(ref, changed):
                lines.append(f"{job.name}: no change matches on.push.paths")
                continue
            outcome = self.start(f"{delivery}-{job.name}", where, job, event="push", policy_event=TriggerEvent.PUSH,
                                 changed=changed, username=pusher)
            (started if outcome.startswith("run:") else lines).append(outcome if outcome.startswith("run:")
                                                                      else f"{job.name}: {outcome}")
        fields: dict[str, Any] = {"runs": len(started)}
        if reconciled is not None:
            fields["reconciled"] = reconciled
        fields["run_ids"] = [s.split("run:", 1)[1] for s in started]
        return Started("accepted" if started else "nothing", fields, started + lines)

    def schedule(self, delivery: str, event: dict[str, Any]) -> Started:
        from lambda_runtime.github.events import Started

        repo, name, cron = str(event["repository"]["full_name"]), str(event["job"]), str(event["cron"])
        installation = event.get("installation_id")
        where = self._default_head(repo, installation)
        jobs, problems = self._jobs(where)
        owner = event.get("owner") is True  # the deployment owner's schedule: the job need not declare it
        job = next((j for j in jobs or [] if j.name == name and (owner or any(
            s.cron == cron for s in j.on.schedule or []))), None)
        if job is None:  # the config changed since the schedule was made: the next reconcile removes it
            logger.info("stale schedule; nothing runs", extra={"repo": repo, "job": name, "cron": cron})
            return Started("stale-schedule")
        if problems:
            return self._invalid(where, problems)
        outcome = self.start(delivery, where, job, event="schedule", policy_event=TriggerEvent.SCHEDULE, changed=None,
                             username="iac-ci-schedule")
        ran = outcome.startswith("run:")
        return Started("accepted" if ran else "nothing", {"run_ids": [outcome[4:]] if ran else []}, [outcome])

    def after(self, delivery: str, event: dict[str, Any]) -> Started:
        from lambda_runtime.github.events import Started

        up_repo, up_job, status = str(event["repo"]), str(event["job"]), str(event["status"])
        chain = [str(c) for c in event.get("chain") or []] + [node(up_repo, up_job)]
        policy = self.events.policy
        started: list[str] = []
        lines: list[str] = []
        for sub in self.chains.subscribers(up_repo, up_job):
            if status not in sub.statuses:
                continue
            if sub.branches is not None and not any(
                    selection.glob_match(b, str(event.get("branch") or "")) for b in sub.branches):
                continue
            if not policy.pipelines.allows_chain(up_repo, sub.repo) or not policy.allows_repository(sub.repo):
                lines.append(f"{sub.key}: not allowed by the deployment policy (pipelines.chains)")
                continue
            if sub.key in chain or len(chain) > MAX_CHAIN:
                logger.warning("chained run refused: it would loop", extra={"chain": chain, "job": sub.key})
                lines.append(f"{sub.key}: refused, the chain {' -> '.join(chain)} would loop or is too long")
                continue
            where = self._default_head(sub.repo, sub.installation_id)
            jobs, problems = self._jobs(where)
            job = next((j for j in jobs or [] if j.name == sub.job and any(
                a.job == up_job and (a.repo or sub.repo).lower() == up_repo.lower() for a in j.on.after or [])), None)
            if job is None:
                lines.append(f"{sub.key}: its config no longer follows {up_repo}#{up_job}")
                continue
            if problems:
                self._invalid(where, problems)
                continue
            given = job.config.get("params")
            defined: dict[str, Any] = given if isinstance(given, dict) else {}
            params = {k: str(v) for k, v in (event.get("params") or {}).items() if k in defined}
            upstream = {"run_id": str(event["run_id"]), "job": up_job, "repo": up_repo, "status": status,
                        "orders": [str(o) for o in event.get("orders") or []][:5000], "chain": chain}
            outcome = self.start(f"{delivery}-{sub.key}", where, job, event="after", policy_event=TriggerEvent.AFTER,
                                 changed=None, username="iac-ci-after", upstream=upstream, params=params)
            (started if outcome.startswith("run:") else lines).append(outcome if outcome.startswith("run:")
                                                                      else f"{sub.key}: {outcome}")
        ids = [s.split("run:", 1)[1] for s in started]
        if ids:
            self.events.acceptance.store.update_run(str(event["run_id"]), {"downstream_run_ids": ids})
        return Started("accepted" if started else "nothing", {"runs": len(started), "run_ids": ids}, started + lines)

    # ---- reconciling the default branch's schedules and subscriptions ----------------------------
    def reconcile(self, where: Where, jobs: list[repo_config.RepoJob], problems: list[Problem]) -> dict[str, int]:
        """Schedules and subscriptions follow the default branch's config; an invalid config
        changes neither (the last valid one stays in force)."""
        if problems:
            return {}
        wanted_schedules = [ScheduledJob(where.repo, j.name, s.cron, where.installation)
                            for j in jobs for s in j.on.schedule or []]
        subs: list[Subscription] = []
        policy = self.events.policy
        for j in jobs:
            for a in j.on.after or []:
                upstream_repo = a.repo or where.repo
                sub = Subscription(upstream_repo, a.job, Subscriber(
                    where.repo, j.name, tuple(a.statuses), tuple(a.branches) if a.branches is not None else None,
                    where.installation))
                if not policy.pipelines.allows_chain(upstream_repo, where.repo):
                    problems.append(Problem(None, f"jobs.{j.name}.on.after", f"following {upstream_repo} is not "
                                            "allowed by this deployment (policy pipelines.chains)"))
                    continue
                loop = self.chains.would_loop(sub) if a.repo else None  # within one file: checked already
                if loop:
                    problems.append(Problem(None, f"jobs.{j.name}.on.after", "the jobs would trigger each other in "
                                            "a loop: " + " -> ".join(loop)))
                    continue
                subs.append(sub)
        if problems:
            return {}
        done = self.chains.reconcile(where.repo, subs)
        if self.schedules is not None:
            changed = self.schedules.reconcile(where.repo, wanted_schedules)
            done.update({k: len(v) for k, v in changed.items()})
        elif wanted_schedules:
            logger.warning("the config has schedules but this deployment has no schedule group",
                           extra={"repo": where.repo})
        return done

    # ---- starting a run ---------------------------------------------------------------------------
    def start(self, key: str, where: Where, job: repo_config.RepoJob, *, event: str, policy_event: TriggerEvent,
              changed: list[str] | None, username: str, upstream: dict[str, Any] | None = None,
              params: dict[str, str] | None = None) -> str:
        """``run:<id>`` for a run accepted (or accepted before, for a retried delivery), else why not."""
        settings = self.events.settings
        git = self.events.git_source(where.clone_url, where.commit)
        cfg = job.config
        doc: dict[str, Any] = {"name": job.name, "username": re.sub(r"[^A-Za-z0-9_.@-]", "-", username)[:64],
                               "repo": where.repo, "commit": where.commit, "source": {"git": git},
                               "orders": cfg.get("orders")}
        for k in ("env", "timeout", "params"):
            if k in cfg:
                doc[k] = cfg[k]
        rules = replace(settings.validation_policy(policy_event, where.branch), internal=True)
        doc, expanded = matrix.expand_written(doc)
        try:
            if expanded:
                raise JobValidationError([Problem(o, f, m) for o, f, m in expanded])
            whole = parse_job({**doc, **({"upstream": upstream} if upstream else {})},
                              replace(rules, check_rules=False))
            names = set(selection.select_pipeline(whole, event=event, changed=changed))
            if not names:
                return "no order is selected (when)"
            orders = [{**o, "depends_on": [d for d in o.get("depends_on") or [] if d in names]}
                      for o in doc["orders"] if isinstance(o, dict) and o.get("name") in names]
            run_doc = {**doc, "orders": orders, "context": {
                "repo": where.repo, "head_sha": where.commit, "base_ref": where.branch, "event": event,
                "ref": where.full_ref,
                "changed_paths": list(changed)[:3000] if changed is not None else None}}
            if upstream:
                run_doc["upstream"] = upstream
            if params:
                run_doc["param_values"] = params
            job_model = parse_job(run_doc, rules)
        except JobValidationError as exc:
            self._invalid(where, exc.problems, name=job.name)
            return f"invalid ({len(exc.problems)} problem(s))"
        ack = self.events.acceptance.accept_job(job_model, idempotency_key=f"github-{key}"[:200], run_fields={
            "vcs": "github", "installation_id": where.installation, "trigger": policy_event.value,
            "branch": where.branch})
        logger.info("pipeline run accepted", extra={"repo": where.repo, "job": job.name, "trigger": event,
                                                    "run_id": ack["run_id"]})
        return f"run:{ack['run_id']}"

    # ---- reading the config -----------------------------------------------------------------------
    def _jobs(self, where: Where) -> tuple[list[repo_config.RepoJob] | None, list[Problem]]:
        """The config's jobs at the commit (None: there is no config)."""
        text = self.events.vcs.read_file(where.repo, self.events.settings.github_config_file, where.commit,
                                         where.installation)
        if text is None:
            return None, []
        config, problems = repo_config.parse(text)
        jobs, more = repo_config.jobs_of(config, where.repo)
        return jobs, problems + more

    def _default_head(self, repo: str, installation: int | None) -> Where:
        branch, sha, clone_url = self.events.vcs.default_head(repo, installation)
        return Where(repo, sha, clone_url, branch, installation)

    def _invalid(self, where: Where, problems: list[Problem], *, name: str | None = None) -> Started:
        """A failing status on the commit, naming the first problems (a push has no pull request to
        comment on; ``iac-ci validate --repo-config`` lists them all)."""
        from lambda_runtime.github.events import Started

        path = self.events.settings.github_config_file
        first = "; ".join(str(p) for p in problems[:2])
        logger.warning("pipeline config invalid", extra={"repo": where.repo, "commit": where.commit,
                                                         "problems": [str(p) for p in problems[:50]]})
        self.events.vcs.set_status(where.repo, where.commit, "failure", f"{path}: {len(problems)} problem(s): {first}",
                                   context=status_context(name, None) if name else PIPELINES_CONTEXT,
                                   installation_id=where.installation)
        return Started("invalid", {"problems": len(problems)}, [f"{len(problems)} problem(s): {first}"])


def delivery_id(kind: str, *parts: str) -> str:
    """An internal delivery id (``[A-Za-z0-9-]``, at most 64): the kind and a digest of what names it."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:40]
    return f"{kind}-{digest}"
