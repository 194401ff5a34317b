"""``/iac-ci`` commands on a pull request: what each does, and the one reply it gets.

Every command is acknowledged at once with a reaction (👀), then answered with one reply listing
what was done or every problem. ``plan``, ``run``, ``apply``, ``unlock`` and ``cancel`` need write
permission on the repository (the collaborator permission API, never the comment's
``author_association``); ``approve`` and ``reject`` are checked against the environment's
reviewers (``approvals.Approvals``). A comment's words are only ever matched against the grammar
of ``github.commands``: nothing of it reaches a shell.

- ``plan [NAME...] [-d DIR...]`` (``run`` is the same, kept for ``fork_pull_requests``): plans
  the head commit again, all plan orders whose files changed, or the ones named.
- ``apply [NAME...] [-d DIR...]``: runs the apply orders (``apply_on: command``) selected by the
  change, or the ones named, on the plan of the current head: refused when there is no plan, when
  the head moved since it, while it still runs, or for an order whose plan orders did not succeed;
  an order already applied at this commit is not applied again. The apply orders' ``inputs`` take
  the plan run's artifacts (the saved plan file).
- ``unlock``: releases every lock the pull request holds.
- ``cancel``: cancels the pull request's runs in flight (an apply already running finishes).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lambda_runtime.approvals.logic import Verdict
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.github import commands
from lambda_runtime.github.events import PullRequest, Started, Trigger
from lambda_runtime.github.webhooks import parse_time
from lambda_runtime.logs import logger
from lambda_runtime.policy.model import ForkPolicy, TriggerEvent
from lambda_runtime.schema import retention
from lambda_runtime.schema.records import RunSnapshot
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.summary import run_summary
from lambda_runtime.vcs.base import notify

if TYPE_CHECKING:
    from lambda_runtime.github.events import GitHubEvents

WRITE = ("admin", "maintain", "write")
MAX_LISTED = 100
CLOCK_SKEW_SECONDS = 60  # a comment may be stamped a little before the run it approves was accepted

Reply = Callable[[str], None]


@dataclass
class CommentCommands:
    events: GitHubEvents

    def handle(self, delivery: str, repo: str, event: dict[str, Any], installation: int | None) -> Started:
        comment, number = event["comment"], int(event["issue"]["number"])
        login = str(comment["user"]["login"])
        header = f"<!-- iac-ci:reply:{int(comment['id'])} -->"
        vcs = self.events.vcs

        def reply(text: str) -> None:
            vcs.comment_once(repo, number, f"{header}\n{text}"[:60000], installation)

        try:
            cmd = commands.parse(str(comment.get("body") or ""))
        except commands.CommandError as exc:
            self._ack(repo, int(comment["id"]), installation, "confused")
            reply(f"❌ @{login}: {exc}")
            return Started("replied", {"command": "invalid"})
        if cmd is None:
            return Started("ignored")
        self._ack(repo, int(comment["id"]), installation, "eyes")
        if cmd.verb == "help":
            reply(f"iac-ci commands:\n\n{commands.HELP}")
            return Started("replied", {"command": "help"})
        if cmd.verb in ("approve", "reject"):
            written = parse_time(comment.get("created_at")) or self.events.clock()
            return self._decision(repo, number, login, cmd, written, installation, reply)
        refusal = self._needs_write(repo, login, cmd.verb, installation)
        if refusal:
            reply(refusal)
            return Started("refused", {"command": cmd.verb})
        pr = PullRequest.from_payload(repo, vcs.pull_request(repo, number, installation))
        if cmd.verb == "unlock":
            return self._unlock(pr, login, reply)
        if cmd.verb == "cancel":
            cancelled = self.events.cancel_runs(pr, delivery)
            reply(f"🚫 @{login} cancelled {len(cancelled)} run(s) in flight"
                  + (": " + ", ".join(f"`{r}`" for r in cancelled) if cancelled else "")
                  + ". Queued orders are cancelled; an apply already running finishes.")
            return Started("cancelled", {"command": "cancel", "runs": len(cancelled)})
        if pr.state != "open":
            reply(f"❌ @{login}: this pull request is {pr.state}; nothing was started.")
            return Started("refused", {"command": cmd.verb})
        if cmd.sha and not pr.head_sha.lower().startswith(cmd.sha):
            reply(f"❌ @{login}: the pull request's head is now `{pr.head_sha[:12]}`, not `{cmd.sha}`; nothing was "
                  "started. Review the new commits and run again.")
            return Started("refused", {"command": cmd.verb})
        if cmd.verb == "apply":
            return self._apply(delivery, pr, login, cmd, installation, reply)
        return self._plan(delivery, pr, login, cmd, installation, reply)

    def rerun(self, delivery: str, repo: str, event: dict[str, Any], installation: int | None) -> Started:
        """GitHub's "Re-run" button on one of our check runs: plan the pull request's head again."""
        check = event["check_run"]
        prs = [p for p in check.get("pull_requests") or [] if isinstance(p, dict) and p.get("number")]
        login = str((event.get("sender") or {}).get("login") or "")
        if not prs or not str(check.get("name") or "").startswith("iac-ci/"):
            return Started("ignored")
        if self._needs_write(repo, login, "plan", installation):
            return Started("refused", {"command": "rerun"})
        pr = PullRequest.from_payload(repo, self.events.vcs.pull_request(repo, int(prs[0]["number"]), installation))
        if pr.state != "open" or pr.head_sha != check.get("head_sha") or pr.untrusted_reasons(self.events.policy):
            return Started("refused", {"command": "rerun"})
        return self.events.plan(delivery, pr, installation, event="comment")

    # ---- commands -------------------------------------------------------------------------
    def _plan(self, delivery: str, pr: PullRequest, login: str, cmd: commands.Command, installation: int | None,
              reply: Reply) -> Started:
        policy = self.events.policy
        reasons = pr.untrusted_reasons(policy)
        mode = policy.fork_pull_requests
        if reasons and mode is ForkPolicy.NEVER:
            reply(f"❌ @{login}: this pull request will not run on this deployment: {' and '.join(reasons)}, and "
                  "`fork_pull_requests` is `never`. Push the change to a branch of this repository instead.")
            return Started("refused", {"command": cmd.verb})
        withhold = bool(reasons) and mode is ForkPolicy.WITHOUT_SECRETS
        started = self.events.plan(delivery, pr, installation, event="comment", names=cmd.orders, dirs=cmd.dirs,
                                   untrusted=bool(reasons), withhold=withhold, params=cmd.params)
        how = ""
        if reasons:
            how = " without any secret or role" if mode is ForkPolicy.WITHOUT_SECRETS else \
                " with every order that receives credentials waiting for `/iac-ci approve`"
            how += f" (`fork_pull_requests: {mode.value}`)"
        self._report(login, "plan", pr, started, reply, how)
        return started

    def _apply(self, delivery: str, pr: PullRequest, login: str, cmd: commands.Command, installation: int | None,
               reply: Reply) -> Started:
        if pr.untrusted_reasons(self.events.policy):
            reply(f"❌ @{login}: an apply never runs for a pull request from a fork or an untrusted author. "
                  "Push the change to a branch of this repository instead.")
            return Started("refused", {"command": "apply"})
        store = self.events.acceptance.store
        refs = self.events.pr_runs.recent(pr.repo, pr.number)
        plan_ref = next((r for r in refs if r.command == "plan"), None)
        problem, snap = None, None
        if plan_ref is None:
            problem = "this pull request has no plan yet: comment `/iac-ci plan` first"
        elif plan_ref.commit != pr.head_sha:
            problem = (f"the head moved to `{pr.head_sha[:12]}` since the last plan (run `{plan_ref.run_id}` of "
                       f"`{plan_ref.commit[:12]}`): the plan is stale. Comment `/iac-ci plan`, then apply")
        else:
            snap = store.load(plan_ref.run_id)
            if snap.run is None or retention.expired(snap.run.expire_at, self.events.clock()):
                days = self.events.settings.run_retention_days
                problem = (f"the plan (run `{plan_ref.run_id}`) has expired: a run is kept {days} day(s) after it "
                           "ends. Comment `/iac-ci plan`, then apply")
            elif not snap.run.finalized:
                problem = f"the plan (run `{plan_ref.run_id}`) is still running: apply once it has finished"
        earlier = {r.run_id: store.load(r.run_id) for r in refs if r.command == "apply" and r.commit == pr.head_sha}
        in_flight = [run_id for run_id, s in earlier.items() if _in_flight(s)]
        if problem is None and in_flight:
            problem = f"an apply of this commit is still running (run `{in_flight[0]}`)"
        if problem is not None or snap is None or plan_ref is None:
            reply(f"❌ @{login}: nothing was applied: {problem}.")
            return Started("refused", {"command": "apply"})
        applied = {n for s in earlier.values() for n, o in s.orders.items() if o.status is OrderStatus.SUCCEEDED}
        started = self.events.start(delivery, pr, installation, Trigger(
            command="apply", event="comment", policy_event=TriggerEvent.COMMENT, commit=pr.head_sha,
            changed=self.events.vcs.changed_files(pr.repo, pr.number, installation),
            names=cmd.orders, dirs=cmd.dirs, apply_on="command", pr_number=pr.number, skip=frozenset(applied),
            # the plan's parameters, unless the command sets them again (checked against the definitions)
            params=tuple({**(snap.run.params or {} if snap.run else {}), **dict(cmd.params)}.items()),
            plan_run={"run_id": plan_ref.run_id, "commit": plan_ref.commit,
                      "orders": {n: o.status.value for n, o in snap.orders.items()}}))
        self._report(login, "apply", pr, started, reply, f" with the plan of run `{plan_ref.run_id}`")
        return started

    def _unlock(self, pr: PullRequest, login: str, reply: Reply) -> Started:
        released = self.events.locks.release_all(pr.holder.key, by=login, reason="/iac-ci unlock")
        if released:
            reply(f"🔓 @{login} released {len(released)} lock(s) of this pull request: "
                  + ", ".join(f"`{n}`" for n in released[:MAX_LISTED]))
        else:
            reply(f"🔓 @{login}: this pull request holds no lock.")
        return Started("unlocked", {"command": "unlock", "released": len(released)})

    def _report(self, login: str, verb: str, pr: PullRequest, started: Started, reply: Reply, how: str = "") -> None:
        if started.outcome == "accepted":
            lines = [f"▶️ @{login} started {verb} run `{started.fields['run_id']}` of `{pr.head_sha[:12]}`{how}: "
                     f"{started.fields.get('orders', 0)} order(s)."]
        else:
            lines = [f"❌ @{login}: nothing was started ({verb}):" if started.outcome != "nothing" else
                     f"ℹ️ @{login}: nothing to {verb}:"]
        lines += [f"- {line}" for line in started.lines[:MAX_LISTED]]
        reply("\n".join(lines))

    def _needs_write(self, repo: str, login: str, verb: str, installation: int | None) -> str | None:
        permission = self.events.vcs.permission(repo, login, installation)
        if permission in WRITE:
            return None
        return (f"❌ @{login}: `/iac-ci {verb}` needs write permission on `{repo}` (yours: `{permission}`). "
                "Nothing was done.")

    def _ack(self, repo: str, comment_id: int, installation: int | None, content: str) -> None:
        try:
            self.events.vcs.react(repo, comment_id, content, installation)
        except Exception:  # the reply follows anyway
            logger.warning("could not react to a command", extra={"repo": repo, "comment": comment_id})

    # ---- approve / reject -------------------------------------------------------------------
    def _decision(self, repo: str, number: int, login: str, cmd: commands.Command, written: float,
                  installation: int | None, reply: Reply) -> Started:
        ev = self.events
        verdict: Verdict = "approve" if cmd.verb == "approve" else "reject"
        snap = self._waiting_run(repo, number, cmd.sha, written)
        if snap is None or snap.run is None:
            at = f" at `{cmd.sha}`" if cmd.sha else ""
            reply(f"❌ @{login}: no run of this pull request{at} is waiting for approval; nothing was recorded.")
            return Started("replied", {"command": verdict, "recorded": 0})
        run = snap.run
        reviewer = Reviewer(identity=login, kind="github", via="comment",
                            member_of=lambda team: ev.vcs.team_member(team, login, installation),
                            can_write=ev.vcs.can_write(repo, login, installation))
        outcome = ev.approvals.decide(run.run_id, verdict, reviewer, orders=cmd.orders, reason=cmd.reason)
        where = f"run `{run.run_id}` (commit `{(run.commit or '')[:12]}`)"
        if not outcome.recorded:
            lines = [f"❌ @{login}: nothing was recorded for {where}:"]
            lines += [f"- {p}" for p in outcome.problems[:MAX_LISTED]]
            reply("\n".join(lines))
            return Started("refused", {"command": verdict, "problems": len(outcome.problems)})
        after = ev.acceptance.store.load(run.run_id)
        # the run's comment shows the decision now: the orchestrator republishes it only with its next transition
        notify(ev.vcs, "run_updated", run_summary(after))
        verb = "approved" if verdict == "approve" else "rejected"
        icon = "✅" if verdict == "approve" else "🛑"
        lines = [f"{icon} @{login} {verb} {len(outcome.recorded)} order(s) of {where}:"]
        for name in outcome.recorded[:MAX_LISTED]:
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
        lines += [f"- problem: {p}" for p in outcome.problems[:MAX_LISTED]]
        reply("\n".join(lines))
        return Started("decided", {"command": verdict, "recorded": len(outcome.recorded)})

    def _waiting_run(self, repo: str, number: int, sha: str | None, written: float) -> RunSnapshot | None:
        """The PR's most recent run (of ``sha`` if given) that waits for approval and that existed
        when the comment was written: a replayed or delayed old comment never decides a newer run."""
        for ref in self.events.pr_runs.recent(repo, number):
            if sha and not ref.commit.lower().startswith(sha):
                continue
            snap = self.events.acceptance.store.load(ref.run_id)
            run = snap.run
            if run is None or run.finalized or run.status.terminal:
                continue
            if (run.created_at or 0) > written + CLOCK_SKEW_SECONDS:
                continue
            if any(o.status is OrderStatus.AWAITING_APPROVAL for o in snap.orders.values()):
                return snap
        return None


def _in_flight(snap: RunSnapshot) -> bool:
    return snap.run is not None and not snap.run.finalized
