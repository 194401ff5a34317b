"""RunStore against the embedded DynamoDB: conditional moves, their events, the fence, the guards."""

from __future__ import annotations

import pytest

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.schema.records import OrderRecord, RunRecord
from lambda_runtime.schema.status import OrderStatus as S
from lambda_runtime.schema.status import RunStatus as R
from lambda_runtime.schema.transitions import IllegalTransition
from lambda_runtime.store.locks import LeaseLost, RunLocks
from lambda_runtime.store.runs import RunStore, Transition


@pytest.fixture()
def store(clients: AwsClients, stack) -> RunStore:
    settings, _ = stack
    return RunStore(clients.dynamodb, settings.orders_table, settings.events_table)


@pytest.fixture()
def locks(clients: AwsClients, stack) -> RunLocks:
    settings, _ = stack
    return RunLocks(clients.dynamodb, settings.locks_table, lease_seconds=30)


def running_run(store: RunStore, *names: str) -> str:
    assert store.create_run(RunRecord(run_id="r1", status=R.ACCEPTED, trace_id="r1:1", order_total=len(names)))
    assert store.transition_run("r1", from_status=R.ACCEPTED, to=R.PACKAGING)
    assert store.put_orders("r1", [OrderRecord(name=n, timeout=60) for n in names])
    assert store.transition_run("r1", from_status=R.PACKAGING, to=R.RUNNING, event=("job_started", {}))
    return "r1"


def test_a_run_is_created_once_and_read_back_typed(store: RunStore) -> None:
    run = RunRecord(run_id="r1", status=R.ACCEPTED, name="job", deadline=123.5, order_total=2)
    assert store.create_run(run) is True
    assert store.create_run(run) is False
    assert store.get_run("r1") == RunRecord(run_id="r1", status=R.ACCEPTED, name="job", deadline=123.5,
                                            order_total=2)
    assert store.get_run("nope") is None


def test_orders_are_inserted_only_while_packaging(store: RunStore) -> None:
    running_run(store, "a")
    assert store.put_orders("r1", [OrderRecord(name="a", timeout=1)]) is False
    assert store.load("r1").orders["a"].timeout == 60


def test_moves_are_conditional_and_each_writes_one_event(store: RunStore) -> None:
    run_id = running_run(store, "a", "b")
    start = [Transition("a", (S.QUEUED,), S.RUNNING, {"attempt": 1}), Transition("b", (S.QUEUED,), S.RUNNING)]
    assert store.transition_many(run_id, start) == {"a", "b"}
    # a second holder with the same stale view moves nothing (at most once)
    assert store.transition_many(run_id, start) == set()
    done = [Transition("a", (S.RUNNING,), S.SUCCEEDED, {"exit_code": 0})]
    assert store.transition_many(run_id, done) == {"a"}
    snap = store.load(run_id)
    assert snap.orders["a"].status is S.SUCCEEDED and snap.orders["a"].exit_code == 0
    assert snap.orders["b"].status is S.RUNNING
    types = [(e["order_name"], e["event_type"]) for e in store.events(run_id)]
    assert types.count(("a", "order_running")) == 1 and types.count(("a", "order_succeeded")) == 1
    assert ("#job", "job_started") in types


def test_an_undeclared_move_is_refused_before_any_write(store: RunStore) -> None:
    run_id = running_run(store, "a")
    with pytest.raises(IllegalTransition):
        store.transition_many(run_id, [Transition("a", (S.QUEUED,), S.SUCCEEDED)])
    with pytest.raises(IllegalTransition):
        store.transition_run(run_id, from_status=R.RUNNING, to=R.PACKAGING)
    assert store.load(run_id).orders["a"].status is S.QUEUED


def test_a_fenced_write_by_a_replaced_holder_raises_lease_lost(store: RunStore, locks: RunLocks) -> None:
    run_id = running_run(store, "a")
    old = locks.acquire(run_id, "old")
    assert old is not None and locks.release(old, seen_pending=old.pending) is None
    new = locks.acquire(run_id, "new")
    assert new is not None
    with pytest.raises(LeaseLost):
        store.transition_many(run_id, [Transition("a", (S.QUEUED,), S.RUNNING)], fence=locks.fence(old))
    assert store.transition_many(run_id, [Transition("a", (S.QUEUED,), S.RUNNING)], fence=locks.fence(new)) == {"a"}


def test_finalize_happens_once(store: RunStore) -> None:
    run_id = running_run(store)
    assert store.finalize(run_id, R.RUNNING, R.SUCCEEDED, {"status": "succeeded"}) is True
    assert store.finalize(run_id, R.RUNNING, R.FAILED, {"status": "failed"}) is False
    run = store.get_run(run_id)
    assert run is not None and run.status is R.SUCCEEDED and run.finalized is True
    assert [e["event_type"] for e in store.events(run_id)].count("job_completed") == 1
    assert store.update_run(run_id, {"cancel_requested": True}, unless_finalized=True) is False


def test_finalize_gives_the_run_and_every_order_their_ttl(clients: AwsClients, stack) -> None:
    """The run item and each order item (past one transaction's 100 items) expire a retention after the end."""
    settings, _ = stack
    store = RunStore(clients.dynamodb, settings.orders_table, settings.events_table, clock=lambda: 1_000_000.25,
                     run_retention_days=2)
    names = [f"o{i:03d}" for i in range(100)]  # two transactions: 99 and 1
    run_id = running_run(store, *names)
    assert store.load_items(run_id, fields=("expire_at",))[1]["o000"].get("expire_at") is None  # live: no TTL
    assert store.finalize(run_id, R.RUNNING, R.SUCCEEDED, {"status": "succeeded"}, orders=names) is True
    run, orders = store.load_items(run_id, fields=("expire_at",))
    want = 1_000_000 + 2 * 86400
    assert run is not None and run["expire_at"] == want and store.get_run(run_id).expire_at == want  # type: ignore[union-attr]
    assert len(orders) == 100 and {o["expire_at"] for o in orders.values()} == {want}


def test_a_replaced_holder_cannot_finalize_nor_set_a_ttl(store: RunStore, locks: RunLocks) -> None:
    run_id = running_run(store, "a")
    old = locks.acquire(run_id, "old")
    assert old is not None and locks.release(old, seen_pending=old.pending) is None
    assert locks.acquire(run_id, "new") is not None
    assert store.finalize(run_id, R.RUNNING, R.SUCCEEDED, {}, fence=locks.fence(old), orders=["a"]) is False
    run, orders = store.load_items(run_id, fields=("expire_at", "finalized"))
    assert run is not None and "expire_at" not in run and "finalized" not in run and "expire_at" not in orders["a"]


def test_open_only_reads_skip_final_orders_but_keep_the_run(store: RunStore) -> None:
    run_id = running_run(store, "a", "b")
    store.transition_many(run_id, [Transition("a", (S.QUEUED,), S.SKIPPED)])
    run, orders = store.load_items(run_id, fields=("status",), open_only=True)
    assert run is not None and set(orders) == {"b"} and set(orders["b"]) == {"run_id", "sk", "status", "name"}
