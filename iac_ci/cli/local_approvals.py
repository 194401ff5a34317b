"""Approvals for ``iac-ci run``: the person running it owns that embedded deployment, so their
word (``--approve ORDER``, or a yes at the prompt) releases an order whatever its environment's
count. An order nobody approved is rejected with the reason, so a run without a terminal ends
instead of waiting for its job timeout."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterable
from typing import Any

from lambda_runtime.approvals.logic import Approvals
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.schema.status import OrderStatus

ALL = "all"


class LocalApprover:
    def __init__(self, approvals: Approvals, run_id: str, approve: Iterable[str], *,
                 ask: Callable[[str], bool] | None, say: Callable[[str], None]):
        self._approvals, self._run_id = approvals, run_id
        self._approve = set(approve)
        self._ask, self._say = ask, say
        self._done: set[str] = set()
        self._reviewer = Reviewer(identity=f"local:{_user()}", kind="local", via="cli", owner=True)

    def check(self, summary: dict[str, Any]) -> None:
        """Decide every order that has started waiting since the last look."""
        for name, order in summary.get("orders", {}).items():
            if order.get("status") != OrderStatus.AWAITING_APPROVAL.value or name in self._done:
                continue
            self._done.add(name)
            env = (order.get("approval") or {}).get("environment") or "its environment"
            if ALL in self._approve or name in self._approve:
                self._decide("approve", name, f"approved {name} ({env}) with --approve")
            elif self._ask is not None and self._ask(f"order {name} needs approval ({env}). Approve it?"):
                self._decide("approve", name, f"approved {name} ({env})")
            else:
                self._decide("reject", name, f"rejected {name} ({env}): not approved; pass --approve {name}",
                             reason="not approved at the local prompt or with --approve")

    def _decide(self, verdict: str, name: str, message: str, reason: str = "") -> None:
        out = self._approvals.decide(self._run_id, verdict, self._reviewer, [name], reason=reason)  # type: ignore[arg-type]
        self._say(message if out.recorded else f"{name}: " + "; ".join(out.problems))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in a container: still a local decision
        return "operator"


def interactive() -> bool:
    return sys.stdin.isatty()
