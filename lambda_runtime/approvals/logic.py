"""Recording a reviewer's approval or rejection of waiting orders.

All or nothing: every named order is checked first (waiting, the reviewer listed by its
environment, not the run's author under ``prevent_self_review``, not a second approval by the
same person) and either every decision is written or none is, with every problem listed. Each
write is conditional on the order still waiting and on this reviewer not having approved it
yet, in one transaction with its audit event, so two concurrent approvals by one person count
once and an approval that races the job timeout changes nothing. The orchestrator is then woken:
the planner alone decides when an order has what it needs and dispatches it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lambda_runtime.approvals.reviewers import Reviewer, matching_entry
from lambda_runtime.aws.clients import AwsClients, is_conditional_failure
from lambda_runtime.policy.model import ForkPolicy, Policy
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import OrderRecord, RunRecord, order_sk
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.store.codec import to_item, value
from lambda_runtime.store.runs import RunStore

Verdict = Literal["approve", "reject"]


@dataclass
class Outcome:
    """What happened to a decision: ``recorded`` orders, or every ``problems`` and nothing written."""

    run_id: str
    verdict: Verdict
    reviewer: str
    recorded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    status: int = 200  # the HTTP answer: 200, 403 (not allowed), 404 (no such run), 409 (not waiting)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "verdict": self.verdict, "reviewer": self.reviewer,
                "recorded": self.recorded, "problems": self.problems}


@dataclass
class Approvals:
    clients: AwsClients
    store: RunStore
    internal_bucket: str
    policy: Callable[[], Policy]
    clock: Callable[[], float] = time.time

    def decide(self, run_id: str, verdict: Verdict, reviewer: Reviewer, orders: Sequence[str] = (), *,
               reason: str = "") -> Outcome:
        out = Outcome(run_id, verdict, reviewer.identity)
        snap = self.store.load(run_id)
        if snap.run is None:
            out.status, out.problems = 404, [f"run {run_id} does not exist"]
            return out
        if snap.run.finalized or snap.run.status.terminal:
            out.status, out.problems = 409, [f"run {run_id} is already {snap.run.status.value}"]
            return out
        waiting = sorted(n for n, o in snap.orders.items() if o.status is OrderStatus.AWAITING_APPROVAL)
        targets = list(dict.fromkeys(orders)) or waiting
        if not targets:
            out.status, out.problems = 409, [f"no order of run {run_id} is awaiting approval"]
            return out
        rules: dict[str, str] = {}
        for name in targets:
            problem, rule = self._check(snap.run, snap.orders.get(name), name, reviewer)
            if problem:
                out.problems.append(problem)
            else:
                rules[name] = rule
        if out.problems:
            out.status = 404 if any("does not exist" in p for p in out.problems) else \
                409 if any("is not awaiting" in p or "already approved" in p for p in out.problems) else 403
            self._audit_refusal(run_id, verdict, reviewer, targets, out.problems)
            return out
        now = self.clock()
        for name in targets:
            if self._write(run_id, snap.orders[name], verdict, reviewer, rules[name], reason, now):
                out.recorded.append(name)
            else:
                out.problems.append(f"order '{name}' changed meanwhile (no longer awaiting, or already decided by "
                                    f"{reviewer.identity})")
        if out.recorded:
            self.clients.s3.put_object(
                Bucket=self.internal_bucket,
                Key=layout.control_key(run_id, layout.SIGNAL_APPROVAL_PREFIX + uuid.uuid4().hex), Body=b"{}")
        if out.problems and not out.recorded:
            out.status = 409
        return out

    # ---- rules ----------------------------------------------------------------------------
    def _check(self, run: RunRecord, order: OrderRecord | None, name: str, reviewer: Reviewer
               ) -> tuple[str | None, str]:
        if order is None:
            return f"order '{name}' does not exist in run {run.run_id}", ""
        if order.status is not OrderStatus.AWAITING_APPROVAL:
            return f"order '{name}' is not awaiting approval (it is {order.status.value})", ""
        policy = self.policy()
        env = policy.environments.get(order.environment or "")
        prevent_self = env.prevent_self_review if env is not None else True
        if prevent_self and not reviewer.owner and reviewer.same_person(run.username):
            return (f"order '{name}': {reviewer.identity} started this run and cannot review it "
                    f"(prevent_self_review of environment '{order.environment}')"), ""
        if any(str(a.get("by", "")).lower() == reviewer.identity.lower() for a in order.approvals):
            return f"order '{name}' is already approved by {reviewer.identity}", ""
        if reviewer.owner:
            return None, "owner of the deployment (local run)"
        entry = matching_entry(env, reviewer) if env is not None else None
        if entry is not None:
            return None, f"reviewers: {entry}"
        # an untrusted PR's order gated only by on_approval: any collaborator who may push decides
        fork_gate = run.untrusted and policy.fork_pull_requests is ForkPolicy.ON_APPROVAL
        if fork_gate and not (env and env.reviewers) and reviewer.can_write:
            return None, "fork_pull_requests: on_approval (collaborator with write permission)"
        listed = ", ".join(env.reviewers) if env is not None and env.reviewers else "nobody"
        return (f"order '{name}': {reviewer.identity} is not a reviewer of environment '{order.environment}' "
                f"(reviewers: {listed})"), ""

    # ---- writes ---------------------------------------------------------------------------
    def _write(self, run_id: str, order: OrderRecord, verdict: Verdict, reviewer: Reviewer, rule: str,
               reason: str, now: float) -> bool:
        record: dict[str, Any] = {"by": reviewer.identity, "at": now, "via": reviewer.via, "rule": rule}
        if reviewer.owner:
            record["owner"] = True  # releases the order whatever the count (``planner._gate``)
        key = {"run_id": value(run_id), "sk": value(order_sk(order.name))}
        names = {"#s": "status"}
        values: dict[str, Any] = {":w": value(OrderStatus.AWAITING_APPROVAL.value)}
        if verdict == "approve":
            update = "SET approvals = list_append(if_not_exists(approvals, :none), :a) ADD approvers :who"
            condition = "#s = :w AND attribute_not_exists(rejection) AND NOT contains(approvers, :me)"
            values.update({":none": value([]), ":a": value([record]), ":who": {"SS": [reviewer.identity.lower()]},
                           ":me": value(reviewer.identity.lower())})
            event = "approval_granted"
            detail = {**record, "environment": order.environment, "count": len(order.approvals) + 1,
                      "needed": order.approvals_needed}
        else:
            update = "SET rejection = :r"
            condition = "#s = :w AND attribute_not_exists(rejection)"
            values[":r"] = value({**record, "reason": reason[:500]})
            event = "approval_rejected"
            detail = {**record, "environment": order.environment, "reason": reason[:500]}
        put = self.store.event_put(run_id, order.name, f"{event}#{uuid.uuid4().hex[:8]}", detail,
                                   order_trace=order.trace)
        put["Put"]["Item"].update(to_item({"event_type": event}))
        try:
            items: list[Any] = [
                {"Update": {"TableName": self.store.orders_table, "Key": key, "UpdateExpression": update,
                            "ConditionExpression": condition, "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values}},
                put,
            ]
            self.clients.dynamodb.transact_write_items(TransactItems=items)
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise

    def _audit_refusal(self, run_id: str, verdict: Verdict, reviewer: Reviewer, orders: list[str],
                       problems: list[str]) -> None:
        put = self.store.event_put(run_id, "run", f"approval_refused#{uuid.uuid4().hex[:8]}",
                                   {"by": reviewer.identity, "via": reviewer.via, "verdict": verdict,
                                    "orders": orders, "problems": problems[:20], "at": self.clock()})
        put["Put"]["Item"].update(to_item({"event_type": "approval_refused"}))
        self.clients.dynamodb.put_item(**put["Put"])
