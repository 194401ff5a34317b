"""Which GitHub event starts what (runs in the packaging function): a queued pull-request event or
``/iac-ci`` command becomes a job, a reviewer's decision, or a reply.

Trust. A pull request runs on its own only when its head is a branch of the repository itself and
its author's ``author_association`` is one the policy trusts (``Policy.trusted_associations``;
a bot is no exception). Anything else (a fork, an outside contributor, ``dependabot[bot]``)
runs nothing: its config is not read, its code is not fetched, no job exists. It gets one comment
per head commit saying why, and what ``fork_pull_requests`` lets a collaborator do:

- ``never``: nothing, ever;
- ``without_secrets``: ``/iac-ci run`` from someone with write permission starts it with no
  credentials at all (an order asking for a secret or a role is refused, listed in one comment);
- ``on_approval``: ``/iac-ci run`` starts it, and every order that would receive credentials
  waits for an approval (``packaging.logic.gate_fields``).

Config. ``.iac-ci.yml`` at the PR's head commit declares the orders (the job file's ``orders``
schema, plus optional ``name``, ``env`` and ``timeout``); the repository at that commit is every
order's default source. Orders of a *protected* environment (``Environment.protected``: any
rule) are the exception: their definitions come from the base branch's ``.iac-ci.yml`` (at
``pull_request.base.sha``), so a pull request cannot change what runs with a protected
environment's credentials, only the code it runs on. A head order in a protected environment is
replaced by the base's order of the same name (in a protected environment too) or dropped; a
note on the PR lists both. The job-level ``env`` of the head does not reach those orders (the
base's does). No file: no job. An invalid file: one PR comment listing every problem, and no
job. A valid file: the job is accepted through the store's ``Acceptance`` (idempotent per
delivery), and the PR's pointer to its runs (``pr_runs``) is updated.

Commands (``github.commands``): ``run`` needs write permission on the repository (the
collaborator permission API, not the comment's ``author_association``); ``approve`` and
``reject`` go to ``approvals.Approvals`` with the commenter as GitHub signed the webhook, for the
most recent run of the PR that waits (or the run of ``@SHA``), and only for a run that existed
when the comment was written. Every command gets one reply listing what was done or every problem.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import yaml

from lambda_runtime.approvals.logic import Approvals, Verdict
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github import commands
from lambda_runtime.github.deliveries import MAX_PROCESSING_ATTEMPTS, Deliveries
from lambda_runtime.github.pr_runs import PrRuns
from lambda_runtime.job import yaml_text
from lambda_runtime.job.validate import JobValidationError, Problem, parse_job
from lambda_runtime.logs import logger
from lambda_runtime.policy.model import ForkPolicy, Policy, TriggerEvent
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import RunRecord, RunSnapshot
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance
from lambda_runtime.summary import run_summary
from lambda_runtime.vcs.base import notify

if TYPE_CHECKING:  # PyGithub is imported by whoever builds the provider, not by this module
    from lambda_runtime.github.provider import GitHubVcs

CONFIG_KEYS = {"orders", "name", "env", "timeout"}
MAX_LISTED_PROBLEMS = 200
MAX_LISTED_ORDERS = 100
CLOCK_SKEW_SECONDS = 60  # a comment may be stamped a little before the run it approves was accepted


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

    @classmethod
    def from_payload(cls, repo: str, pr: dict[str, Any]) -> PullRequest:
        head, base = pr.get("head") or {}, pr.get("base") or {}
        head_repo = head.get("repo") or {}
        user = pr.get("user") or {}
        return cls(repo=repo, number=int(pr["number"]), head_sha=str(head.get("sha") or ""),
                   head_repo=head_repo.get("full_name"), clone_url=head_repo.get("clone_url"),
                   base_ref=str(base.get("ref") or ""), base_sha=base.get("sha"),
                   author=_login(pr), login=str(user.get("login") or "?")[:64],
                   author_type=str(user.get("type") or "User"),
                   association=str(pr.get("author_association") or "NONE").upper(),
                   state=str(pr.get("state") or "open"))

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


@dataclass
class Started:
    outcome: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class GitHubEvents:
    settings: Settings
    clients: AwsClients
    vcs: GitHubVcs
    acceptance: Acceptance
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.deliveries = Deliveries(self.clients.dynamodb, self.settings.idempotency_table)
        self.pr_runs = PrRuns(self.clients.dynamodb, self.settings.idempotency_table, clock=self.clock)
        self.approvals = Approvals(self.clients, self.acceptance.store, self.settings.internal_bucket,
                                   policy=self.settings.deployment_policy, clock=self.clock)

    def handle(self, delivery: str) -> str:
        """Process one queued delivery once; returns its outcome (for logs and tests)."""
        if not self.deliveries.claim(delivery):
            return "duplicate"
        try:
            started = self._process(delivery)
        except Exception as exc:
            attempts = self.deliveries.failed_attempt(delivery, f"{type(exc).__name__}: {exc}")
            if attempts >= MAX_PROCESSING_ATTEMPTS:  # recorded as failed: GitHub's redelivery may start it again
                logger.exception("github event failed for good", extra={"delivery": delivery, "attempts": attempts})
                return "failed"
            raise  # the queue's retry may claim it again
        self.deliveries.finish(delivery, started.outcome, **started.fields)
        return started.outcome

    def _process(self, delivery: str) -> Started:
        raw = self.clients.s3.get_object(Bucket=self.settings.internal_bucket,
                                         Key=layout.webhook_key("github", delivery))["Body"].read()
        event = json.loads(raw)
        installation = (event.get("installation") or {}).get("id")
        repo = event["repository"]["full_name"]
        if "comment" in event and "issue" in event:
            return self._command(delivery, repo, event, installation)
        pr = PullRequest.from_payload(repo, event["pull_request"])
        reasons = pr.untrusted_reasons(self.settings.deployment_policy())
        if reasons:
            self.vcs.comment_once(repo, pr.number, untrusted_comment(pr, reasons, self.settings.deployment_policy()),
                                  installation)
            logger.info("untrusted pull request; nothing runs", extra={"repo": repo, "pr": pr.number,
                                                                       "reasons": reasons})
            return Started("untrusted", {"reasons": len(reasons)})
        return self._start(delivery, pr, installation, event=TriggerEvent.PULL_REQUEST)

    # ---- starting a run ---------------------------------------------------------------------
    def _start(self, delivery: str, pr: PullRequest, installation: int | None, *, event: TriggerEvent,
               untrusted: bool = False, withhold: bool = False) -> Started:
        repo, sha = pr.repo, pr.head_sha
        text = self.vcs.read_file(repo, self.settings.github_config_file, sha, installation)
        if text is None:
            logger.info("no config file in the repository; no job", extra={"repo": repo, "commit": sha})
            return Started("no-config")
        policy = self.settings.validation_policy(event, pr.base_ref, withhold_credentials=withhold)
        try:
            doc, note = self._job_document(text, pr, installation)
            job = parse_job(doc, policy)
        except JobValidationError as exc:
            title = ("asks for credentials, and this pull request runs without any "
                     "(`fork_pull_requests: without_secrets`)") if withhold and _only_withheld(exc.problems) else \
                "is invalid"
            self.vcs.comment_once(repo, pr.number, config_problems_comment(
                self.settings.github_config_file, sha, exc.problems, title=title, key=delivery), installation)
            return Started("invalid", {"problems": len(exc.problems)})
        ack = self.acceptance.accept_job(job, idempotency_key=f"github-{delivery}", run_fields={
            "vcs": "github", "installation_id": installation, "trigger": event.value, "branch": pr.base_ref,
            "untrusted": untrusted})
        self.pr_runs.add(repo, pr.number, ack["run_id"], commit=sha)
        if note:
            self.vcs.comment_once(repo, pr.number, note, installation)
        return Started("accepted", {"run_id": ack["run_id"]})

    def _job_document(self, text: str, pr: PullRequest, installation: int | None) -> tuple[dict[str, Any], str]:
        config = _config(text)
        orders, env, note = config.get("orders"), config.get("env"), ""
        policy = self.settings.deployment_policy()
        if isinstance(orders, list) and any(_protected(o, policy) for o in orders):
            base = self._base_config(pr, installation)
            orders, env, replaced, dropped = protected_from_base(orders, env, base, policy)
            if replaced or dropped:
                note = protected_note(pr, replaced, dropped, self.settings.github_config_file, base is not None)
        if not pr.clone_url:
            raise JobValidationError([Problem(None, "source", "the pull request's head repository no longer exists")])
        git: dict[str, Any] = {"url": pr.clone_url, "ref": pr.head_sha}
        if self.settings.github_token_secret_id:
            git["token"] = {"secret": self.settings.github_token_secret_id}
        doc: dict[str, Any] = {
            "name": config.get("name") or flow_label(pr.repo),
            "username": pr.author,
            "repo": pr.repo,
            "pr_number": pr.number,
            "commit": pr.head_sha,
            "source": {"git": git},
            "orders": orders,
        }
        if env is not None:
            doc["env"] = env
        if "timeout" in config:
            doc["timeout"] = config["timeout"]
        return doc, note

    def _base_config(self, pr: PullRequest, installation: int | None) -> dict[str, Any] | None:
        """The base branch's config at the PR's base commit; None when it has none (or an unreadable one)."""
        ref = pr.base_sha or pr.base_ref
        text = self.vcs.read_file(pr.repo, self.settings.github_config_file, ref, installation) if ref else None
        if text is None:
            return None
        try:
            return _config(text)
        except JobValidationError:
            logger.warning("the base branch's config is invalid; protected orders are dropped",
                           extra={"repo": pr.repo, "ref": ref})
            return None

    # ---- commands ---------------------------------------------------------------------------
    def _command(self, delivery: str, repo: str, event: dict[str, Any], installation: int | None) -> Started:
        comment, number = event["comment"], int(event["issue"]["number"])
        login = str(comment["user"]["login"])
        header = f"<!-- iac-ci:reply:{int(comment['id'])} -->"

        def reply(text: str) -> None:
            self.vcs.comment_once(repo, number, f"{header}\n{text}"[:60000], installation)

        try:
            cmd = commands.parse(str(comment.get("body") or ""))
        except commands.CommandError as exc:
            reply(f"❌ @{login}: {exc}")
            return Started("replied", {"command": "invalid"})
        if cmd is None:
            return Started("ignored")
        if cmd.verb == "help":
            reply(f"iac-ci commands: {commands.USAGE}")
            return Started("replied", {"command": "help"})
        if cmd.verb == "run":
            return self._run_command(delivery, repo, number, login, cmd, installation, reply)
        written = _parse_time(comment.get("created_at")) or self.clock()
        return self._decision(repo, number, login, cmd, written, installation, reply)

    def _run_command(self, delivery: str, repo: str, number: int, login: str, cmd: commands.Command,
                     installation: int | None, reply: Callable[[str], None]) -> Started:
        permission = self.vcs.permission(repo, login, installation)
        if permission not in ("admin", "maintain", "write"):
            reply(f"❌ @{login}: `/iac-ci run` needs write permission on `{repo}` (yours: `{permission}`). "
                  "Nothing was started.")
            return Started("refused", {"command": "run"})
        pr = PullRequest.from_payload(repo, self.vcs.pull_request(repo, number, installation))
        if pr.state != "open":
            reply(f"❌ @{login}: this pull request is {pr.state}; nothing was started.")
            return Started("refused", {"command": "run"})
        if cmd.sha and not pr.head_sha.lower().startswith(cmd.sha):
            reply(f"❌ @{login}: the pull request's head is now `{pr.head_sha[:12]}`, not `{cmd.sha}`; nothing was "
                  "started. Review the new commits and run again.")
            return Started("refused", {"command": "run"})
        policy = self.settings.deployment_policy()
        reasons = pr.untrusted_reasons(policy)
        if not reasons:
            return self._start(delivery, pr, installation, event=TriggerEvent.COMMENT)
        mode = policy.fork_pull_requests
        if mode is ForkPolicy.NEVER:
            reply(f"❌ @{login}: this pull request will not run on this deployment: {' and '.join(reasons)}, and "
                  "`fork_pull_requests` is `never`. Push the change to a branch of this repository instead.")
            return Started("refused", {"command": "run"})
        started = self._start(delivery, pr, installation, event=TriggerEvent.COMMENT, untrusted=True,
                              withhold=mode is ForkPolicy.WITHOUT_SECRETS)
        if started.outcome == "accepted":
            how = "without any secret or role" if mode is ForkPolicy.WITHOUT_SECRETS else \
                "with every order that receives credentials waiting for `/iac-ci approve`"
            reply(f"▶️ @{login} started run `{started.fields['run_id']}` of `{pr.head_sha[:12]}` {how} "
                  f"(`fork_pull_requests: {mode.value}`).")
        return started

    def _decision(self, repo: str, number: int, login: str, cmd: commands.Command, written: float,
                  installation: int | None, reply: Callable[[str], None]) -> Started:
        verdict: Verdict = "approve" if cmd.verb == "approve" else "reject"
        snap = self._waiting_run(repo, number, cmd.sha, written)
        if snap is None or snap.run is None:
            at = f" at `{cmd.sha}`" if cmd.sha else ""
            reply(f"❌ @{login}: no run of this pull request{at} is waiting for approval; nothing was recorded.")
            return Started("replied", {"command": verdict, "recorded": 0})
        run = snap.run
        reviewer = Reviewer(identity=login, kind="github", via="comment",
                            member_of=lambda team: self.vcs.team_member(team, login, installation),
                            can_write=self.vcs.can_write(repo, login, installation))
        outcome = self.approvals.decide(run.run_id, verdict, reviewer, orders=cmd.orders, reason=cmd.reason)
        where = f"run `{run.run_id}` (commit `{(run.commit or '')[:12]}`)"
        if not outcome.recorded:
            lines = [f"❌ @{login}: nothing was recorded for {where}:"]
            lines += [f"- {p}" for p in outcome.problems[:MAX_LISTED_PROBLEMS]]
            reply("\n".join(lines))
            return Started("refused", {"command": verdict, "problems": len(outcome.problems)})
        after = self.acceptance.store.load(run.run_id)
        # the run's comment shows the decision now: the orchestrator republishes it only with its next transition
        notify(self.vcs, "run_updated", run_summary(after))
        verb = "approved" if verdict == "approve" else "rejected"
        icon = "✅" if verdict == "approve" else "🛑"
        lines = [f"{icon} @{login} {verb} {len(outcome.recorded)} order(s) of {where}:"]
        for name in outcome.recorded[:MAX_LISTED_ORDERS]:
            o = after.orders.get(name)
            if o is None:
                continue
            if verdict == "approve":
                by = ", ".join(str(a.get("by")) for a in o.approvals)
                left = max(0, o.approvals_needed - len(o.approvals))
                state = "approved: it starts now" if left == 0 and not o.wait_seconds else \
                    "approved: it starts when its wait timer ends" if left == 0 else f"still waiting for {left} more"
                lines.append(f"- `{name}` (environment `{o.environment}`): {len(o.approvals)} of "
                             f"{o.approvals_needed} ({by}); {state}")
            else:
                lines.append(f"- `{name}` (environment `{o.environment}`): rejected"
                             + (f": {cmd.reason[:300]}" if cmd.reason else "") + "; orders depending on it are skipped")
        lines += [f"- problem: {p}" for p in outcome.problems[:MAX_LISTED_PROBLEMS]]
        reply("\n".join(lines))
        return Started("decided", {"command": verdict, "recorded": len(outcome.recorded)})

    def _waiting_run(self, repo: str, number: int, sha: str | None, written: float) -> RunSnapshot | None:
        """The PR's most recent run (of ``sha`` if given) that waits for approval and that existed
        when the comment was written: a replayed or delayed old comment never decides a newer run."""
        for ref in self.pr_runs.recent(repo, number):
            if sha and not ref.commit.lower().startswith(sha):
                continue
            snap = self.acceptance.store.load(ref.run_id)
            run: RunRecord | None = snap.run
            if run is None or run.finalized or run.status.terminal:
                continue
            if (run.created_at or 0) > written + CLOCK_SKEW_SECONDS:
                continue
            if any(o.status is OrderStatus.AWAITING_APPROVAL for o in snap.orders.values()):
                return snap
        return None


# ---- protected environments --------------------------------------------------------------------
def _environment_name(order: Any) -> Any:
    return order.get("environment") if isinstance(order, dict) else None


def _protected(order: Any, policy: Policy) -> bool:
    """Whether a raw order (as written in the config) runs in a protected environment."""
    if not isinstance(order, dict):
        return False
    name = _environment_name(order)
    if name is not None and not isinstance(name, str):
        return False  # invalid: validation names it
    found = policy.environment_for(name)
    return found is not None and found[1].protected


def protected_from_base(head_orders: list[Any], head_env: Any, base: dict[str, Any] | None, policy: Policy
                        ) -> tuple[list[Any], Any, list[str], list[str]]:
    """The orders to run: the head's, except that each head order in a protected environment is
    the base's protected order of that name, or is dropped. Returns (orders, job env, replaced,
    dropped). When a base order is kept, the job-level ``env`` is folded into each order (the
    head's into the head's orders, the base's into the base's), so the head's job env cannot
    reach a protected order."""
    base_orders = base.get("orders") if base else None
    by_name = {o["name"]: o for o in base_orders if isinstance(o, dict) and isinstance(o.get("name"), str)
               and _protected(o, policy)} if isinstance(base_orders, list) else {}
    base_env = base.get("env") if base else None
    out: list[Any] = []
    kept: list[int] = []  # indexes of orders taken from the base
    replaced, dropped = [], []
    for order in head_orders:
        if not _protected(order, policy):
            out.append(order)
            continue
        name = order.get("name")
        theirs = by_name.get(name) if isinstance(name, str) else None
        if theirs is None:
            dropped.append(str(name))
            continue
        if theirs != order:
            replaced.append(str(name))
        kept.append(len(out))
        out.append(theirs)
    env = head_env
    if kept and (head_env or base_env):
        if not (head_env is None or isinstance(head_env, dict)) or not (base_env is None or isinstance(base_env, dict)):
            return out, head_env, replaced, dropped  # an invalid env: validation names it
        folded = []
        for i, order in enumerate(out):
            job_env = base_env if i in kept else head_env
            if isinstance(order, dict) and job_env:
                own = order.get("env")
                order = {**order, "env": {**job_env, **own} if isinstance(own, dict) else own if own is not None
                         else dict(job_env)}
            folded.append(order)
        out, env = folded, None
    return out, env, replaced, dropped


def protected_note(pr: PullRequest, replaced: list[str], dropped: list[str], path: str, base_found: bool) -> str:
    """The PR note naming the orders a protected environment took from the base branch."""
    lines = [f"<!-- iac-ci:protected:{pr.head_sha}:{','.join(sorted(replaced))}:{','.join(sorted(dropped))} -->",
             f"### 🔒 iac-ci: protected environments run `{pr.base_ref}`'s orders", "",
             f"Orders in a protected environment run as `{path}` on `{pr.base_ref}` "
             f"(commit `{(pr.base_sha or '')[:12]}`) defines them, not as this pull request does; the code they "
             f"run on is this pull request's (`{pr.head_sha[:12]}`).", ""]
    lines += [f"- `{n}`: replaced by its definition on `{pr.base_ref}`" for n in replaced[:MAX_LISTED_ORDERS]]
    why = "not defined there" if base_found else f"`{pr.base_ref}` has no readable `{path}`"
    lines += [f"- `{n}`: dropped ({why}); it runs once the change is merged" for n in dropped[:MAX_LISTED_ORDERS]]
    return "\n".join(lines)


# ---- comments ---------------------------------------------------------------------------------
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


def config_problems_comment(path: str, sha: str, problems: list[Problem], *, title: str = "is invalid",
                            key: str = "") -> str:
    """The one PR comment for an invalid config file: every problem (up to a bound), under GitHub's limit.
    ``key`` (the delivery) makes a retried event post it once, and a later event post it again."""
    lines = [f"<!-- iac-ci:config:{sha}{':' + key if key else ''} -->",
             f"### ❌ iac-ci did not start: `{path}` at `{sha[:12]}` {title}", ""]
    lines += [f"- {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"- … and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)[:60000]


def _only_withheld(problems: list[Problem]) -> bool:
    return all("runs without credentials" in p.message for p in problems)


# ---- helpers ----------------------------------------------------------------------------------
def _config(text: str) -> dict[str, Any]:
    try:
        config = yaml_text.load(text)
    except yaml.YAMLError as exc:
        raise JobValidationError([Problem(None, "", f"not valid YAML: {yaml_text.describe(exc)}")]) from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise JobValidationError([Problem(None, "", f"not a YAML document iac-ci can read: {str(exc)[:200]}")]
                                 ) from None
    if not isinstance(config, dict):
        raise JobValidationError([Problem(None, "", "must be a mapping with 'orders'")])
    unknown = sorted(set(config) - CONFIG_KEYS, key=str)
    if unknown:
        raise JobValidationError([Problem(None, str(k), "unknown field") for k in unknown])
    return config


def flow_label(repo: str) -> str:
    """A valid job name from a repository name (``Org/My_Repo`` -> ``my-repo``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", repo.split("/")[-1].lower()).strip("-")
    return (name or "repo")[:63]


def _login(pr: dict[str, Any]) -> str:
    login = str((pr.get("user") or {}).get("login") or "github")
    return re.sub(r"[^A-Za-z0-9_.@-]", "-", login)[:64]


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None
