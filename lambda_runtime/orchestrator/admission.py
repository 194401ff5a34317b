"""The last check before an order starts: its lock, and for an apply its requirements.

Both are facts outside the run (another pull request's lock; the pull request's reviews, merge
state and checks on GitHub), so they are asked at the moment the order would start, not when
the run was accepted: a lock released an hour later, or an approving review given while the plan
ran, counts. An order that fails either never starts: it ends ``locked`` or ``blocked`` with the
reason, its dependents are skipped, and nothing of it ran.

Locks belong to a holder, not to an order: the pull request (``github:<repo>#<n>``) for its runs,
the run itself otherwise. Taking a lock the holder already has refreshes its expiry, so a plan
and the apply of the same pull request share it; a run that is not a pull request's gives its
locks back when it ends, as does a merge's apply run (``RunRecord.release_locks``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lambda_runtime.logs import logger
from lambda_runtime.schema.records import OrderRecord, RunRecord
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.store.pr_locks import Holder, LockHeld, PrLock, PrLocks
from lambda_runtime.store.runs import Transition

# the requirement an apply run implies: the plan it applies is the pull request's head
HEAD_REQUIREMENT = "head"


def holder_of(run: RunRecord) -> Holder:
    if run.lock_holder and run.repo and run.pr_number:
        return Holder.pull_request(run.repo, run.pr_number, run.pr_url)
    return Holder.run(run.run_id)


def locked_reason(lock: PrLock) -> str:
    """"locked by [acme/infra#60](url) until ..." — the PR comment shows it as a link."""
    label = lock.holder.label()
    who = f"[{label}]({lock.holder.url})" if lock.holder.url else label
    until = datetime.fromtimestamp(lock.expires_at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"lock `{lock.name}` is held by {who} (order `{lock.order}`) until {until}; " \
           f"it is released when that pull request merges or closes, or by `/iac-ci unlock` there"


@dataclass
class Admission:
    locks: PrLocks
    vcs: Any  # a VcsProvider; requirements are asked only of one that can answer them
    clock: Callable[[], float] = time.time

    def refuse(self, run: RunRecord, order: OrderRecord) -> Transition | None:
        """None: it may start. Otherwise the transition that ends it without running."""
        if order.lock:
            try:
                self.locks.acquire(order.lock, holder_of(run), run_id=run.run_id, order=order.name,
                                   ttl_seconds=run.lock_ttl_seconds)
            except LockHeld as held:
                return self._end(order, OrderStatus.LOCKED, locked_reason(held.lock),
                                 {"lock": order.lock, "holder": held.lock.holder.key})
        unmet = self.unmet(run, order)
        if unmet:
            return self._end(order, OrderStatus.BLOCKED, "; ".join(unmet)[:1500], {"unmet": unmet[:10]})
        return None

    def unmet(self, run: RunRecord, order: OrderRecord) -> list[str]:
        if order.command != "apply":
            return []
        # a merge's apply: the merge was the gate (branch protection), and reviews, mergeability and
        # divergence say nothing about a merged pull request
        wanted: Sequence[str] = () if run.trigger == "merge" else order.apply_requirements
        stale_check = run.command == "apply" and run.plan_run_id is not None
        if not wanted and not stale_check:
            return []
        if not (run.vcs and run.repo and run.pr_number and run.commit):  # the PR flow's own runs only:
            # a job submitted with some pull request's number must not borrow that PR's approvals
            return [f"`{r}` cannot be checked: the run is not a pull request's" for r in wanted] or \
                [f"`{HEAD_REQUIREMENT}`: the run is not a pull request's"]
        ask = getattr(self.vcs, "unmet_requirements", None)
        pull = getattr(self.vcs, "pull_request", None)
        if ask is None or pull is None:
            return [f"`{r}` cannot be checked: no GitHub connection is configured" for r in wanted]
        out: list[str] = []
        try:
            if stale_check:
                head = str(((pull(run.repo, run.pr_number, run.installation_id) or {}).get("head") or {}).get("sha")
                           or "")
                if not head:
                    out.append(f"`{HEAD_REQUIREMENT}`: the pull request's head could not be read; plan again")
                elif head != run.commit:
                    out.append(f"`{HEAD_REQUIREMENT}`: the pull request's head moved to `{head[:12]}` since the plan "
                               f"of `{run.commit[:12]}`; plan again")
            if wanted:
                out += list(ask(run.repo, run.pr_number, run.commit, list(wanted),
                                required_reviews=order.required_reviews, installation_id=run.installation_id))
        except Exception as exc:  # unknown is unmet: an apply never starts on a guess
            logger.exception("apply requirements could not be checked", extra={"order": order.name})
            out.append(f"apply requirements could not be checked on GitHub ({type(exc).__name__}); "
                       "comment `/iac-ci apply` again")
        return out

    def _end(self, order: OrderRecord, to: OrderStatus, reason: str, detail: dict[str, Any]) -> Transition:
        return Transition(order.name, (order.status,), to, {"reason": reason, "finished_at": self.clock()}, detail)
