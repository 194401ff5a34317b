"""Order and run statuses, and which of them are final."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (OrderStatus.QUEUED, OrderStatus.RUNNING)


class RunStatus(StrEnum):
    ACCEPTED = "accepted"
    PACKAGING = "packaging"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED)


WORKER_RESULT_STATUSES = (OrderStatus.SUCCEEDED, OrderStatus.FAILED, OrderStatus.TIMED_OUT)
