"""The ``Notifications`` namespace: the bus the engine publishes on, and rules on what it publishes.

Every event carries ``detail.deployment``, this deployment's name, because the default bus is
shared by the whole account (other deployments of iac-ci included); each rule matches it, the
source and one detail type of ``lambda_runtime.schema.events``, so a rule cannot fire for
another deployment's runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Sequence
from typing import Any

from aws_cdk import Stack, Token
from aws_cdk import aws_events as events
from constructs import Construct

from lambda_runtime.schema.events import DRIFT_DETECTED, ORDER_STATE_CHANGE, RUN_STATE_CHANGE, SOURCE
from lambda_runtime.schema.status import RUN_FINAL, OrderStatus

DEFAULT_BUS = "default"
DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # what every deployment name is
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME, HASH_LEN = 64, 8
RUN_FINAL_STATUSES = frozenset(s.value for s in RUN_FINAL)
ORDER_STATUSES = frozenset(s.value for s in OrderStatus)


def deployment_name(pipeline: Construct) -> str:
    """``<stack name>-<construct id>``: stable for the life of the stack and unique among the
    deployments publishing to one bus (one pipeline per stack). A name that does not fit
    ``[A-Za-z0-9_.-]{1,64}`` has its other characters replaced and, if still too long, is cut and
    suffixed with a hash of the whole; a nested stack's name is a token, so its path is used."""
    stack = Stack.of(pipeline)
    if Token.is_unresolved(stack.stack_name):
        whole = pipeline.node.path.replace("/", "-")
    else:
        whole = f"{stack.stack_name}-{pipeline.node.id}"
    name = _NOT_IN_NAME.sub("-", whole)
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(whole.encode()).hexdigest()[:HASH_LEN]
    return f"{name[:MAX_NAME - HASH_LEN - 1]}-{digest}"


class Notifications(Construct):
    """``scope/Notifications``: the bus, the deployment's name and the rules added on them. Rule ids
    count up per kind (``RunFinished1``, ``RunFinished2``...) in the order the rules are added."""

    def __init__(self, scope: Construct, id: str, *, event_bus: events.IEventBus | None) -> None:
        super().__init__(scope, id)
        self.event_bus = event_bus or events.EventBus.from_event_bus_name(self, "DefaultBus", DEFAULT_BUS)
        self.deployment_name = deployment_name(scope)
        self._count: dict[str, int] = {}

    def run_finished(self, target: events.IRuleTarget, statuses: Sequence[str] | None) -> events.Rule:
        status = _status_filter(statuses, RUN_FINAL_STATUSES, "final run statuses")
        return self._rule("RunFinished", target, RUN_STATE_CHANGE, "runs finished", final=[True], **status)

    def order_state_change(self, target: events.IRuleTarget, statuses: Sequence[str] | None) -> events.Rule:
        status = _status_filter(statuses, ORDER_STATUSES, "order statuses")
        return self._rule("OrderStateChange", target, ORDER_STATE_CHANGE, "order state changes", **status)

    def drift_detected(self, target: events.IRuleTarget) -> events.Rule:
        return self._rule("DriftDetected", target, DRIFT_DETECTED, "drift detected")

    def _rule(self, kind: str, target: events.IRuleTarget, detail_type: str, description: str,
              **detail: list[Any]) -> events.Rule:
        self._count[kind] = self._count.get(kind, 0) + 1
        status = detail.get("status")
        return events.Rule(
            self, f"{kind}{self._count[kind]}", event_bus=self.event_bus, targets=[target],
            description=f"iac-ci {self.deployment_name}: {description}" + (f" ({', '.join(status)})" if status else ""),
            event_pattern=events.EventPattern(
                source=[SOURCE], detail_type=[detail_type], detail={"deployment": [self.deployment_name], **detail}),
        )



def _status_filter(statuses: Sequence[str] | None, allowed: Collection[str], what: str) -> dict[str, list[str]]:
    """``{"status": [...]}`` for a rule's detail (nothing when ``statuses`` is None: every status);
    ValueError for a status the rule would never see."""
    if statuses is None:
        return {}
    if isinstance(statuses, str) or not statuses:
        raise ValueError(f"statuses must be a non-empty sequence of {what} (or None for every one)")
    unknown = [s for s in statuses if s not in allowed]
    if unknown:
        raise ValueError(f"statuses {unknown} are not {what}: {', '.join(sorted(allowed))}")
    return {"status": [str(s) for s in statuses]}
