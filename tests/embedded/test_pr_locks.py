"""Project locks across pull requests, against moto's real conditional writes and transactions."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.settings import Settings
from lambda_runtime.store.locks import RunLocks
from lambda_runtime.store.pr_locks import (
    DEFAULT_LOCK_TTL_SECONDS,
    HOLDER_INDEX_PREFIX,
    LOCK_PREFIX,
    Holder,
    LockHeld,
    PrLock,
    PrLocks,
)

PR60 = Holder.pull_request("acme/infra", 60, "https://github.com/acme/infra/pull/60")
PR61 = Holder.pull_request("acme/infra", 61)
PROD = "acme/infra:infra/prod"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class LostAnswers:
    """A DynamoDB client whose every transaction is sent twice, the answer of the first being
    lost: what an SDK retry after a timeout does to a transaction that was applied."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sent = 0

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.sent += 1
        self._inner.transact_write_items(**kwargs)
        return self._inner.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SmallPages:
    """A DynamoDB client whose scans return one item a page, so pagination is exercised."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.pages = 0

    def scan(self, **kwargs: Any) -> Any:
        self.pages += 1
        return self._inner.scan(**kwargs, Limit=1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


Env = tuple[PrLocks, Clock, Settings]


@pytest.fixture()
def env(stack: tuple[Settings, Any], clients: AwsClients) -> Env:
    settings, _ = stack
    clock = Clock()
    locks = PrLocks(clients.dynamodb, settings.locks_table, settings.events_table, clock=clock,
                    sleep=lambda _s: None)
    return locks, clock, settings


def _events(locks: PrLocks, name: str) -> list[dict[str, Any]]:
    return locks.history(name, limit=1000)


def test_holder_keys_and_labels() -> None:
    assert PR60.key == "github:acme/infra#60" and PR60.label() == "acme/infra#60"
    run = Holder.run("r-123")
    assert run.key == "run:r-123" and run.label() == "run r-123"
    with pytest.raises(ValueError):
        Holder.pull_request("acme/infra", 0)


def test_acquire_then_refresh_by_the_same_holder_keeps_the_epoch(env: Env) -> None:
    locks, clock, _ = env
    first = locks.acquire(PROD, PR60, run_id="r1", order="plan", ttl_seconds=3600)
    assert first == PrLock(PROD, PR60, "r1", "plan", clock.now, clock.now + 3600, 1)
    assert locks.get(PROD) == first
    clock.now += 100
    again = locks.acquire(PROD, PR60, run_id="r2", order="apply")
    assert again.epoch == 1 and again.acquired_at == first.acquired_at
    assert (again.run_id, again.order, again.expires_at) == ("r2", "apply", clock.now + DEFAULT_LOCK_TTL_SECONDS)
    assert locks.get(PROD) == again
    assert [e["event_type"] for e in _events(locks, PROD)] == ["lock_refreshed", "lock_acquired"]


def test_a_lock_held_by_another_refuses_and_names_its_holder(env: Env) -> None:
    locks, _, _ = env
    taken = locks.acquire(PROD, PR60, run_id="r1", order="plan")
    with pytest.raises(LockHeld) as refused:
        locks.acquire(PROD, PR61, run_id="r2", order="plan")
    assert refused.value.lock == taken
    assert refused.value.lock.holder.url == "https://github.com/acme/infra/pull/60"
    assert "acme/infra#60" in str(refused.value)
    with pytest.raises(LockHeld):
        locks.acquire(PROD, Holder.run("r3"), run_id="r3", order="apply")
    assert locks.get(PROD) == taken
    assert len(_events(locks, PROD)) == 1  # a refusal changes nothing and records nothing


def test_an_expired_lock_is_taken_over_and_the_old_holder_loses_it(env: Env) -> None:
    locks, clock, _ = env
    old = locks.acquire(PROD, PR60, run_id="r1", order="plan", ttl_seconds=60)
    clock.now += 59
    with pytest.raises(LockHeld):
        locks.acquire(PROD, PR61, run_id="r2", order="plan")
    clock.now += 1  # exactly at expires_at: expired
    assert locks.get(PROD) == old and old.expired(clock.now)  # still readable, still PR60's
    heir = locks.acquire(PROD, PR61, run_id="r2", order="plan")
    assert heir.holder == PR61 and heir.epoch == old.epoch + 1 and heir.acquired_at == clock.now
    newest = _events(locks, PROD)[0]
    assert newest["event_type"] == "lock_expired_taken"
    assert newest["detail"]["previous_holder"]["holder_key"] == PR60.key
    assert newest["holder_key"] == PR61.key
    assert locks.held_by(PR60.key) == [] and locks.held_by(PR61.key) == [heir]
    assert locks.release(PROD, PR60.key, by="alice", reason="too late") is False
    assert locks.get(PROD) == heir


def test_release_only_by_the_holder(env: Env) -> None:
    locks, _, _ = env
    taken = locks.acquire(PROD, PR60, run_id="r1", order="plan")
    assert locks.release(PROD, PR61.key, by="bob", reason="not mine") is False
    assert locks.get(PROD) == taken
    assert locks.release(PROD, PR60.key, by="alice", reason="merged") is True
    assert locks.get(PROD) is None
    assert locks.release(PROD, PR60.key, by="alice", reason="merged") is False
    assert locks.held_by(PR60.key) == []
    again = locks.acquire(PROD, PR61, run_id="r2", order="plan")
    assert again.epoch == taken.epoch + 1  # epochs only grow, across releases too
    released = _events(locks, PROD)[1]
    assert (released["event_type"], released["by"], released["reason"]) == ("lock_released", "alice", "merged")


def test_release_all_after_taking_three_locks(env: Env, clients: AwsClients) -> None:
    locks, _, settings = env
    names = ["acme/infra:infra/prod", "acme/infra:infra/stage", "shared-vpc"]
    for n in reversed(names):
        locks.acquire(n, PR60, run_id="r1", order=f"plan {n}")
    others = locks.acquire("acme/infra:infra/dev", PR61, run_id="r2", order="plan")
    assert [lk.name for lk in locks.held_by(PR60.key)] == names
    assert locks.release_all(PR60.key, by="github", reason="pull request closed") == names
    assert locks.held_by(PR60.key) == [] and all(locks.get(n) is None for n in names)
    assert locks.list() == [others]
    # the emptied index is gone; the other holder's is untouched
    index_key = {"run_id": {"S": HOLDER_INDEX_PREFIX + PR60.key}}
    gone = clients.dynamodb.get_item(TableName=settings.locks_table, Key=index_key)
    assert "Item" not in gone
    assert locks.held_by(PR61.key) == [others]
    assert locks.release_all(PR60.key, by="github", reason="again") == []
    for n in names:
        assert [e["event_type"] for e in _events(locks, n)] == ["lock_released", "lock_acquired"]


def test_force_release_whatever_the_holder(env: Env) -> None:
    locks, _, _ = env
    taken = locks.acquire(PROD, PR60, run_id="r1", order="apply")
    assert locks.force_release(PROD, by="operator:carol", reason="PR abandoned") == taken
    assert locks.get(PROD) is None and locks.held_by(PR60.key) == []
    assert locks.force_release(PROD, by="operator:carol", reason="again") is None
    forced = _events(locks, PROD)[0]
    assert forced["event_type"] == "lock_forced"
    assert (forced["by"], forced["reason"], forced["holder_key"]) == ("operator:carol", "PR abandoned", PR60.key)
    assert locks.acquire(PROD, PR61, run_id="r2", order="plan").epoch == 2


def test_list_and_held_by(env: Env, clients: AwsClients) -> None:
    locks, clock, settings = env
    # a run lease and a holder index share the table; neither is a lock
    RunLocks(clients.dynamodb, settings.locks_table, clock=clock).acquire("prlock-lookalike-run", "owner")
    short = locks.acquire("b-short", PR60, run_id="r1", order="plan", ttl_seconds=10)
    long_ = locks.acquire("a-long", PR60, run_id="r1", order="plan")
    other = locks.acquire("c-other", Holder.run("r9"), run_id="r9", order="apply")
    locks.acquire("d-released", PR61, run_id="r2", order="plan")
    locks.release("d-released", PR61.key, by="x", reason="done")
    assert locks.list() == [long_, short, other]
    clock.now += 10
    assert locks.list() == [long_, other]
    assert locks.list(include_expired=True) == [long_, short, other]
    assert locks.held_by(PR60.key) == [long_, short]  # expired ones are still the holder's
    assert locks.held_by(Holder.run("r9").key) == [other]
    assert locks.held_by(PR61.key) == []
    paged = SmallPages(clients.dynamodb)
    small = PrLocks(paged, settings.locks_table, settings.events_table, clock=clock)
    assert small.list(include_expired=True) == [long_, short, other] and paged.pages > 3


def test_every_change_writes_exactly_one_event(env: Env) -> None:
    locks, clock, _ = env
    changes = []
    locks.acquire(PROD, PR60, run_id="r1", order="plan", ttl_seconds=60)
    changes.append("lock_acquired")
    locks.acquire(PROD, PR60, run_id="r1", order="apply", ttl_seconds=60)  # same instant: same clock
    changes.append("lock_refreshed")
    with pytest.raises(LockHeld):
        locks.acquire(PROD, PR61, run_id="r2", order="plan")
    clock.now += 61
    locks.acquire(PROD, PR61, run_id="r2", order="plan")
    changes.append("lock_expired_taken")
    assert locks.release(PROD, PR60.key, by="a", reason="stale") is False
    assert locks.release(PROD, PR61.key, by="b", reason="merged") is True
    changes.append("lock_released")
    locks.acquire(PROD, Holder.run("r3"), run_id="r3", order="apply")
    changes.append("lock_acquired")
    locks.force_release(PROD, by="operator", reason="stuck")
    changes.append("lock_forced")
    events = _events(locks, PROD)
    assert [e["event_type"] for e in events] == list(reversed(changes))
    assert all(e["run_id"] == LOCK_PREFIX + PROD and e["lock_name"] == PROD for e in events)
    assert all(isinstance(e["epoch_ms"], int) and e["expire_at"] > clock.now for e in events)
    assert [e["event_type"] for e in locks.history(PROD, limit=2)] == ["lock_forced", "lock_acquired"]
    first = events[-1]
    assert first["order_name"] == "plan" and first["detail"]["run_id"] == "r1" and first["by"] == PR60.key


def test_eight_holders_racing_for_one_lock_one_wins(env: Env) -> None:
    locks, _, _ = env
    holders = [Holder.pull_request("acme/infra", 100 + i) for i in range(8)]
    start = threading.Barrier(len(holders))
    won: list[PrLock] = []
    refused: list[LockHeld] = []
    failed: list[BaseException] = []

    def race(h: Holder) -> None:
        start.wait()
        try:
            won.append(locks.acquire(PROD, h, run_id=f"run-{h.pr_number}", order="plan"))
        except LockHeld as exc:
            refused.append(exc)
        except BaseException as exc:  # any other outcome fails the test below
            failed.append(exc)

    threads = [threading.Thread(target=race, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failed
    assert len(won) == 1 and len(refused) == 7
    assert all(r.lock.holder == won[0].holder for r in refused)
    assert locks.get(PROD) == won[0]
    assert len(_events(locks, PROD)) == 1
    assert sum(len(locks.held_by(h.key)) for h in holders) == 1


def test_a_retried_acquire_does_not_refuse_its_own_holder(env: Env) -> None:
    locks, _, _ = env
    first = locks.acquire(PROD, PR60, run_id="r1", order="plan")
    again = locks.acquire(PROD, PR60, run_id="r1", order="plan")  # the caller retried the whole call
    assert again.epoch == first.epoch and again.holder == PR60


def test_an_applied_write_whose_answer_was_lost_is_recognised(env: Env, clients: AwsClients) -> None:
    _, clock, settings = env
    lossy = LostAnswers(clients.dynamodb)
    locks = PrLocks(lossy, settings.locks_table, settings.events_table, clock=clock)
    taken = locks.acquire(PROD, PR60, run_id="r1", order="plan")  # the resend fails its condition
    assert locks.get(PROD) == taken
    assert locks.release(PROD, PR60.key, by="alice", reason="merged") is True
    assert locks.get(PROD) is None
    assert lossy.sent == 2  # nothing was decided again
    assert [e["event_type"] for e in locks.history(PROD)] == ["lock_released", "lock_acquired"]


def test_a_stale_index_entry_is_ignored_and_repaired(env: Env, clients: AwsClients) -> None:
    locks, _, settings = env
    locks.acquire("gone", PR60, run_id="r1", order="plan")
    kept = locks.acquire("kept", PR60, run_id="r1", order="plan")
    # what DynamoDB TTL does to a lock item long expired
    clients.dynamodb.delete_item(TableName=settings.locks_table, Key={"run_id": {"S": LOCK_PREFIX + "gone"}})
    assert locks.held_by(PR60.key) == [kept]
    assert locks.release_all(PR60.key, by="github", reason="closed") == ["kept"]
    index_key = {"run_id": {"S": HOLDER_INDEX_PREFIX + PR60.key}}
    index = clients.dynamodb.get_item(TableName=settings.locks_table, Key=index_key)
    assert "Item" not in index


@pytest.mark.parametrize("name", ["", "x" * 257, "a\nb", "tab\there", "a\u202eb", "nul\x00"])
def test_invalid_names_are_refused(env: Env, name: str) -> None:
    locks, _, _ = env
    with pytest.raises(ValueError):
        locks.acquire(name, PR60, run_id="r1", order="plan")
    with pytest.raises(ValueError):
        locks.get(name)


def test_the_longest_name_and_unicode_are_accepted(env: Env) -> None:
    locks, _, _ = env
    for name in ("x" * 256, "équipe/infra:prod ☁"):
        assert locks.acquire(name, PR60, run_id="r1", order="plan").name == name
        assert locks.get(name) is not None
