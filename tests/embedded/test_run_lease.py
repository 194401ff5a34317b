"""The run lease: exclusive, expiring, fenced, and without lost wake-ups."""

from __future__ import annotations

import pytest

from lambda_runtime.store.locks import LeaseLost, RunLocks


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def locks(stack, clients):
    settings, _ = stack
    clock = Clock()
    return RunLocks(clients.dynamodb, settings.locks_table, lease_seconds=30, clock=clock), clock


def test_exclusive_until_released(locks) -> None:
    lk, _ = locks
    a = lk.acquire("r", "a")
    assert a is not None and a.epoch == 1
    assert lk.acquire("r", "b") is None
    assert lk.release(a, seen_pending=a.pending) is None
    b = lk.acquire("r", "b")
    assert b is not None and b.epoch == 2  # epochs only grow


def test_contender_mark_forces_the_holder_to_look_again(locks) -> None:
    lk, _ = locks
    holder = lk.acquire("r", "holder")
    assert lk.acquire("r", "late") is None
    assert lk.mark_pending("r") is True  # the late callback leaves its mark
    newer = lk.release(holder, seen_pending=holder.pending)
    assert newer == holder.pending + 1  # release refused: evaluate again
    assert lk.acquire("r", "other") is None  # still held
    assert lk.release(holder, seen_pending=newer) is None


def test_mark_fails_when_nobody_holds_the_lock(locks) -> None:
    lk, _ = locks
    assert lk.mark_pending("r") is False  # the caller must acquire instead
    held = lk.acquire("r", "a")
    lk.release(held, seen_pending=held.pending)
    assert lk.mark_pending("r") is False


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced(locks, stack, clients) -> None:
    lk, clock = locks
    settings, _ = stack
    dead = lk.acquire("r", "dead")
    assert lk.mark_pending("r") is True
    clock.now += 31
    assert lk.mark_pending("r") is False  # an expired holder cannot be relied on
    heir = lk.acquire("r", "heir")
    assert heir is not None and heir.epoch == dead.epoch + 1
    with pytest.raises(LeaseLost):
        lk.extend(dead)
    with pytest.raises(LeaseLost):
        lk.release(dead, seen_pending=dead.pending)
    # a fenced write by the old holder fails inside its transaction
    with pytest.raises(clients.dynamodb.exceptions.TransactionCanceledException):
        clients.dynamodb.transact_write_items(
            TransactItems=[
                lk.fence(dead).condition_check(),
                {"Put": {"TableName": settings.orders_table, "Item": {"run_id": {"S": "r"}, "sk": {"S": "x"}}}},
            ]
        )
    clients.dynamodb.transact_write_items(
        TransactItems=[
            lk.fence(heir).condition_check(),
            {"Put": {"TableName": settings.orders_table, "Item": {"run_id": {"S": "r"}, "sk": {"S": "x"}}}},
        ]
    )
