"""Order and run statuses, and which of them are final.

Finality is declared in one table per enum (``ORDER_FINAL``, ``RUN_FINAL``) rather than derived
from "not queued or running", so a new waiting status (``awaiting_approval``) or a new outcome
(``locked``, ``rejected``) is one line here plus its edges in ``schema.transitions``.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    QUEUED = "queued"
    # its dependencies succeeded; its environment's rules (reviewers, a wait timer) have not passed
    # yet, and nothing it would receive (secrets, role credentials) exists anywhere
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    # a ``drift: true`` plan order exited 2 (``terraform plan -detailed-exitcode``): it ran
    # cleanly and found the infrastructure differs from the code; it counts as a success for
    # its dependents (``run_if: drifted`` ones run only then)
    DRIFTED = "drifted"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # a reviewer of its environment said no
    # another pull request (or run) holds the order's lock: it never started, nothing of it ran
    LOCKED = "locked"
    # an apply requirement (approved, mergeable, undiverged, checks_green) was not met when it
    # was about to start: it never started
    BLOCKED = "blocked"

    @property
    def terminal(self) -> bool:
        return self in ORDER_FINAL


class RunStatus(StrEnum):
    ACCEPTED = "accepted"
    PACKAGING = "packaging"
    # packaging could not build the orders (a source, a secret, a bundle); not final yet: the
    # orchestrator still writes the done object and the job_completed event, as for any run
    PACKAGING_FAILED = "packaging_failed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    # every required order succeeded and at least one ``drift: true`` order found drift
    DRIFTED = "drifted"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in RUN_FINAL


ORDER_FINAL = frozenset(
    {OrderStatus.SUCCEEDED, OrderStatus.DRIFTED, OrderStatus.FAILED, OrderStatus.TIMED_OUT, OrderStatus.SKIPPED,
     OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.LOCKED, OrderStatus.BLOCKED}
)
# final statuses an order reached without running: they block dependents even when the order
# is ``must_succeed: false`` (a skip, a reviewer's no, a held lock, an unmet requirement)
NEVER_RAN = frozenset({OrderStatus.SKIPPED, OrderStatus.REJECTED, OrderStatus.LOCKED, OrderStatus.BLOCKED})
RUN_FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.DRIFTED, RunStatus.FAILED, RunStatus.TIMED_OUT,
                       RunStatus.CANCELLED})
WORKER_RESULT_STATUSES = (OrderStatus.SUCCEEDED, OrderStatus.DRIFTED, OrderStatus.FAILED, OrderStatus.TIMED_OUT)
# an order that ran to completion: what a dependent counts as success
SUCCESSES = frozenset({OrderStatus.SUCCEEDED, OrderStatus.DRIFTED})
