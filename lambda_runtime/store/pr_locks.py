"""Project locks held across pull requests: one holder per name, with expiry and an audit trail.

Like Atlantis's directory+workspace locks: while pull request #60 holds ``acme/infra:infra/prod``
no order of another pull request (or of a run not tied to one) may plan or apply it. Unlike them,
a lock expires (a forgotten pull request stops blocking everyone after ``ttl_seconds``) and
every change is audited.

Where things live and why:
- The lock is an item of the ``orchestrator_locks`` table, pk ``prlock#<name>``, beside the runs'
  leases (their pks are run ids, so the prefix keeps the two apart). Expiry is the stored
  ``expires_at``; DynamoDB TTL lags by days and expired items stay readable, so ``expire_at``
  is written only to garbage-collect items long after they stopped mattering.
- A released lock is not deleted: the item stays (without a holder) so its ``epoch`` and
  ``version`` keep growing, and a holder that read an older state can never match it again.
- Its audit events go to the events table (pk ``prlock#<name>``) in the same TransactWriteItems
  as the change, so there is no change without its event and no event without its change.
- ``prlocks-of#<holder key>`` lists the names a holder holds (a string set), also updated inside
  that transaction, so "every lock of PR #60" is one GetItem rather than a Scan.

Every lock write is a Put conditioned on the exact ``version`` read (``attribute_not_exists``
when there was no item), plus the rule it enforces (taking over only an expired lock, releasing
only as its holder). A write that loses a race re-reads and decides again, a bounded number of
times. Each attempt stores its own token (``txn``) in the item, so an attempt whose answer was
lost (the SDK retried an applied transaction and the retry failed its condition) is recognised
on the re-read as ours instead of being reported as a conflict with ourselves.
"""

from __future__ import annotations

import builtins
import random
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_runtime.aws.clients import error_code, is_conditional_failure
from lambda_runtime.store.codec import from_item, to_item, value

DEFAULT_LOCK_TTL_SECONDS = 7 * 86400
MAX_NAME_LENGTH = 256
MAX_HOLDER_KEY_LENGTH = 512
LOCK_PREFIX = "prlock#"
HOLDER_INDEX_PREFIX = "prlocks-of#"
GC_SECONDS = 30 * 86400  # how long an item outlives its relevance before DynamoDB TTL may delete it
MAX_ATTEMPTS = 10  # re-reads after a lost race before giving up with LockContended
_BATCH_GET = 100  # BatchGetItem's limit

# categories a name may not contain: control (Cc), format (Cf: bidi overrides and zero-width
# characters would let one name display as another in a PR comment), surrogates (Cs), and the
# line/paragraph separators (Zl, Zp) that break one-line displays
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _check_text(what: str, text: str, max_length: int) -> None:
    if not isinstance(text, str) or not 1 <= len(text) <= max_length:
        raise ValueError(f"{what} must be 1..{max_length} characters")
    bad = next((ch for ch in text if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"{what} contains a control character (U+{ord(bad):04X})")


def check_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a valid lock name (1..256 characters, no control characters)."""
    _check_text("lock name", name, MAX_NAME_LENGTH)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: a pull request, or a run not tied to one. ``key`` alone identifies it;
    the rest is what a message needs to say "locked by acme/infra#60" with a link."""

    key: str
    repo: str | None = None
    pr_number: int | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        _check_text("holder key", self.key, MAX_HOLDER_KEY_LENGTH)

    @classmethod
    def pull_request(cls, repo: str, number: int, url: str | None = None) -> Holder:
        if not repo or number <= 0:
            raise ValueError("a pull request holder needs a repository and a positive number")
        # GitHub's names are case-insensitive: one pull request is one holder however an event spells it
        return cls(key=f"github:{repo.lower()}#{number}", repo=repo, pr_number=number, url=url)

    @classmethod
    def run(cls, run_id: str) -> Holder:
        if not run_id:
            raise ValueError("a run holder needs a run id")
        return cls(key=f"run:{run_id}")

    def label(self) -> str:
        """How a message names the holder: ``acme/infra#60`` or ``run <id>``."""
        if self.repo and self.pr_number is not None:
            return f"{self.repo}#{self.pr_number}"
        if self.key.startswith("run:"):
            return f"run {self.key[len('run:'):]}"
        return self.key

    def _attrs(self) -> dict[str, Any]:
        return {"holder_key": self.key, "holder_repo": self.repo, "holder_pr": self.pr_number,
                "holder_url": self.url}

    @classmethod
    def _from_attrs(cls, item: dict[str, Any]) -> Holder:
        pr = item.get("holder_pr")
        return cls(key=item["holder_key"], repo=item.get("holder_repo"),
                   pr_number=int(pr) if pr is not None else None, url=item.get("holder_url"))


@dataclass(frozen=True)
class PrLock:
    """A held lock as last written. An expired lock is still its holder's until someone takes it
    (or it is released), which is why readers get it back and check ``expired``."""

    name: str
    holder: Holder
    run_id: str  # the run that took or last refreshed it
    order: str  # the order that took or last refreshed it
    acquired_at: float
    expires_at: float
    epoch: int  # +1 on every change of holder

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class _State:
    """One consistent read of a lock item: the lock (None when released or never taken) and the
    counters a conditional write must match."""

    lock: PrLock | None
    version: int  # 0 when there is no item
    epoch: int
    txn: str | None


class LockHeld(Exception):
    """Another holder holds the lock and it has not expired; ``lock`` says who and until when."""

    def __init__(self, lock: PrLock):
        super().__init__(f"lock {lock.name!r} is held by {lock.holder.label()} until {lock.expires_at:.0f}")
        self.lock = lock


class LockContended(RuntimeError):
    """The lock changed under every one of ``MAX_ATTEMPTS`` attempts; nothing was written by us."""


class PrLocks:
    def __init__(
        self,
        dynamodb: Any,
        locks_table: str,
        events_table: str,
        *,
        clock: Callable[[], float] = time.time,
        event_ttl_days: int = 90,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._ddb = dynamodb
        self.locks_table = locks_table
        self.events_table = events_table
        self._clock = clock
        self._event_ttl = event_ttl_days * 86400
        self._sleep = sleep  # backoff after a transaction conflict; injectable so tests need not wait

    # ---- writes -------------------------------------------------------------------------
    def acquire(
        self, name: str, holder: Holder, *, run_id: str, order: str, ttl_seconds: int = DEFAULT_LOCK_TTL_SECONDS
    ) -> PrLock:
        """Take ``name`` for ``holder`` when it is free, expired, or already this holder's (then its
        expiry, run and order are refreshed; the epoch stays). Raises ``LockHeld`` when another
        holder holds it unexpired."""
        check_name(name)
        if not run_id or not order:
            raise ValueError("acquire needs the run id and the order taking the lock")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        token: str | None = None
        wrote: PrLock | None = None
        for attempt in range(MAX_ATTEMPTS):
            state = self._read(name)
            if token is not None and state.txn == token and wrote is not None:
                return wrote  # our previous attempt was applied; only its answer was lost
            now = self._clock()
            current = state.lock
            if current is not None and current.holder.key != holder.key and not current.expired(now):
                raise LockHeld(current)
            if current is not None and current.holder.key == holder.key:
                event_type, epoch, acquired_at = "lock_refreshed", current.epoch, current.acquired_at
            else:
                event_type = "lock_expired_taken" if current is not None else "lock_acquired"
                epoch, acquired_at = state.epoch + 1, now
            wrote = PrLock(name, holder, run_id, order, acquired_at, now + ttl_seconds, epoch)
            token = uuid.uuid4().hex
            version = state.version + 1
            item = {
                **self._key_attrs(name),
                "kind": "prlock",
                "lock_name": name,
                **holder._attrs(),
                "lock_run_id": run_id,
                "lock_order": order,
                "acquired_at": acquired_at,
                "expires_at": wrote.expires_at,
                "epoch": epoch,
                "version": version,
                "txn": token,
                "updated_at": now,
                "expire_at": int(wrote.expires_at) + GC_SECONDS,
            }
            guard, names, vals = self._version_guard(state)
            if event_type == "lock_expired_taken":  # never take an unexpired lock, whatever was read
                guard += " AND expires_at <= :now"
                vals[":now"] = value(now)
            elif event_type == "lock_refreshed":
                guard += " AND holder_key = :me"
                vals[":me"] = value(holder.key)
            items = [
                self._put_lock(item, guard, names, vals),
                self._event(name, version, event_type, now, wrote, by=holder.key,
                            reason=f"order {order} of run {run_id}",
                            previous=current.holder if event_type == "lock_expired_taken" and current else None),
                self._index_update(holder.key, name, add=True),
            ]
            previous = current.holder.key if current is not None and event_type == "lock_expired_taken" else None
            if previous is not None:
                items.append(self._index_update(previous, name, add=False))
            if self._transact(items, token, attempt):
                if previous is not None:
                    self._drop_index_if_empty(previous)
                return wrote
        raise LockContended(f"lock {name!r} changed under {MAX_ATTEMPTS} attempts to acquire it")

    def release(self, name: str, holder_key: str, *, by: str, reason: str) -> bool:
        """Release ``name`` if ``holder_key`` holds it (expired or not); False when it does not,
        which includes a lock another holder took over after it expired."""
        check_name(name)
        _check_text("holder key", holder_key, MAX_HOLDER_KEY_LENGTH)
        return self._release(name, holder_key, by=by, reason=reason, event_type="lock_released") is not None

    def release_all(self, holder_key: str, *, by: str, reason: str) -> builtins.list[str]:
        """Release every lock of ``holder_key`` (merged, closed, ``/iac-ci unlock``); returns the
        names released, sorted. A name the index still lists but the holder no longer holds (its
        item was garbage-collected, say) is removed from the index."""
        _check_text("holder key", holder_key, MAX_HOLDER_KEY_LENGTH)
        released: builtins.list[str] = []
        for name in sorted(self._index_names(holder_key)):
            if self._release(name, holder_key, by=by, reason=reason, event_type="lock_released") is not None:
                released.append(name)
            else:
                self._repair_index(holder_key, name)
        self._drop_index_if_empty(holder_key)
        return released

    def force_release(self, name: str, *, by: str, reason: str) -> PrLock | None:
        """An operator's unlock, whoever holds it; returns the lock released (None if none was)."""
        check_name(name)
        return self._release(name, None, by=by, reason=reason, event_type="lock_forced")

    # ---- reads --------------------------------------------------------------------------
    def get(self, name: str) -> PrLock | None:
        """The lock's holder, expired or not (check ``expired``); None when nobody holds it."""
        check_name(name)
        return self._read(name).lock

    def list(self, *, include_expired: bool = False) -> builtins.list[PrLock]:
        """Every held lock, sorted by name; expired ones only when asked (they no longer block)."""
        kwargs: dict[str, Any] = {
            "TableName": self.locks_table,
            "FilterExpression": "begins_with(run_id, :p) AND attribute_exists(holder_key)",
            "ExpressionAttributeValues": {":p": value(LOCK_PREFIX)},
            "ConsistentRead": True,
        }
        now = self._clock()
        found: builtins.list[PrLock] = []
        while True:
            resp = self._ddb.scan(**kwargs)
            for raw in resp.get("Items", []):
                lock = _state_of(from_item(raw)).lock
                if lock is not None and (include_expired or not lock.expired(now)):
                    found.append(lock)
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return sorted(found, key=lambda lk: lk.name)

    def held_by(self, holder_key: str) -> builtins.list[PrLock]:
        """Every lock ``holder_key`` holds, expired ones included (they are still its own until
        taken, and ``release_all`` releases them), sorted by name."""
        _check_text("holder key", holder_key, MAX_HOLDER_KEY_LENGTH)
        names = sorted(self._index_names(holder_key))
        found: builtins.list[PrLock] = []
        for i in range(0, len(names), _BATCH_GET):
            keys = [self._key(n) for n in names[i : i + _BATCH_GET]]
            request: dict[str, Any] = {self.locks_table: {"Keys": keys, "ConsistentRead": True}}
            tries = 0
            while request:
                resp = self._ddb.batch_get_item(RequestItems=request)
                for raw in resp.get("Responses", {}).get(self.locks_table, []):
                    lock = _state_of(from_item(raw)).lock
                    if lock is not None and lock.holder.key == holder_key:
                        found.append(lock)
                request = resp.get("UnprocessedKeys") or {}
                if request:
                    tries += 1
                    self._sleep(min(0.05 * 2**tries, 1.0) * random.random())
        return sorted(found, key=lambda lk: lk.name)

    def history(self, name: str, limit: int = 50) -> builtins.list[dict[str, Any]]:
        """The lock's audit events, newest first, at most ``limit``."""
        check_name(name)
        events: builtins.list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.events_table,
            "KeyConditionExpression": "run_id = :r",
            "ExpressionAttributeValues": {":r": value(LOCK_PREFIX + name)},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        while len(events) < limit:
            resp = self._ddb.query(**kwargs, Limit=limit - len(events))
            events.extend(from_item(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return events[:limit]

    # ---- internals ----------------------------------------------------------------------
    def _release(
        self, name: str, holder_key: str | None, *, by: str, reason: str, event_type: str
    ) -> PrLock | None:
        """Release the lock (only if ``holder_key`` holds it, unless None); the lock released."""
        token: str | None = None
        released: PrLock | None = None
        for attempt in range(MAX_ATTEMPTS):
            state = self._read(name)
            if token is not None and state.txn == token:
                return released  # our previous attempt was applied; only its answer was lost
            current = state.lock
            if current is None or (holder_key is not None and current.holder.key != holder_key):
                return None
            now = self._clock()
            token = uuid.uuid4().hex
            version = state.version + 1
            item = {
                **self._key_attrs(name),
                "kind": "prlock",
                "lock_name": name,
                "epoch": state.epoch,
                "version": version,
                "txn": token,
                "updated_at": now,
                "released_at": now,
                "released_by": by,
                "expire_at": int(now) + GC_SECONDS,
            }
            guard, names, vals = self._version_guard(state)
            guard += " AND holder_key = :k AND epoch = :e"
            vals.update({":k": value(current.holder.key), ":e": value(current.epoch)})
            items = [
                self._put_lock(item, guard, names, vals),
                self._event(name, version, event_type, now, current, by=by, reason=reason),
                self._index_update(current.holder.key, name, add=False),
            ]
            released = current
            if self._transact(items, token, attempt):
                self._drop_index_if_empty(current.holder.key)
                return current
        raise LockContended(f"lock {name!r} changed under {MAX_ATTEMPTS} attempts to release it")

    def _read(self, name: str) -> _State:
        resp = self._ddb.get_item(TableName=self.locks_table, Key=self._key(name), ConsistentRead=True)
        return _state_of(from_item(resp["Item"])) if "Item" in resp else _State(None, 0, 0, None)

    def _index_names(self, holder_key: str) -> set[str]:
        resp = self._ddb.get_item(
            TableName=self.locks_table, Key={"run_id": value(HOLDER_INDEX_PREFIX + holder_key)}, ConsistentRead=True
        )
        return set(from_item(resp["Item"]).get("names", set())) if "Item" in resp else set()

    def _transact(self, items: builtins.list[dict[str, Any]], token: str, attempt: int) -> bool:
        """True when applied; False when cancelled (a condition failed, or a concurrent transaction
        on one of the items: after a short backoff), so the caller re-reads and decides again."""
        try:
            self._ddb.transact_write_items(TransactItems=items, ClientRequestToken=token)
            return True
        except Exception as exc:
            code = error_code(exc)
            if code not in ("TransactionCanceledException", "TransactionInProgressException"):
                raise
            reasons = [r.get("Code") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]
            if code == "TransactionInProgressException" or "TransactionConflict" in reasons:
                self._sleep(min(0.02 * 2**attempt, 1.0) * random.random())
            return False

    def _version_guard(self, state: _State) -> tuple[str, dict[str, str], dict[str, Any]]:
        if state.version == 0:
            return "attribute_not_exists(run_id)", {}, {}
        return "#ver = :ver", {"#ver": "version"}, {":ver": value(state.version)}

    def _put_lock(
        self, item: dict[str, Any], condition: str, names: dict[str, str], vals: dict[str, Any]
    ) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self.locks_table, "Item": to_item(item), "ConditionExpression": condition}
        if names:
            put["ExpressionAttributeNames"] = names
        if vals:
            put["ExpressionAttributeValues"] = vals
        return {"Put": put}

    def _event(
        self,
        name: str,
        version: int,
        event_type: str,
        now: float,
        lock: PrLock,
        *,
        by: str,
        reason: str,
        previous: Holder | None = None,
    ) -> dict[str, Any]:
        """The audit event of one change, in the shape ``RunStore.event_put`` writes. The subject in
        the sort key is the lock's change number, so two changes of one lock never share a key,
        not even within one microsecond or under a frozen test clock."""
        detail: dict[str, Any] = {
            "holder": lock.holder._attrs(),
            "run_id": lock.run_id,
            "order": lock.order,
            "acquired_at": lock.acquired_at,
            "expires_at": lock.expires_at,
            "epoch": lock.epoch,
        }
        if previous is not None:
            detail["previous_holder"] = previous._attrs()
        item = {
            "run_id": LOCK_PREFIX + name,
            "sk": f"{int(now * 1_000_000):016d}#v{version:010d}#{event_type}",
            "order_name": lock.order,
            "event_type": event_type,
            "epoch_ms": int(now * 1000),
            "expire_at": int(now) + self._event_ttl,
            "lock_name": name,
            "holder_key": lock.holder.key,
            "by": by,
            "reason": reason,
            "detail": detail,
        }
        return {"Put": {"TableName": self.events_table, "Item": to_item(item),
                        "ConditionExpression": "attribute_not_exists(sk)"}}

    def _index_update(self, holder_key: str, name: str, *, add: bool) -> dict[str, Any]:
        """ADD/DELETE of one name in the holder's set: both are idempotent, so the index needs no
        condition of its own; the lock item's condition decides whether the transaction applies."""
        return {
            "Update": {
                "TableName": self.locks_table,
                "Key": {"run_id": value(HOLDER_INDEX_PREFIX + holder_key)},
                "UpdateExpression": ("ADD" if add else "DELETE") + " #n :n SET kind = :kind, holder_key = :h",
                "ExpressionAttributeNames": {"#n": "names"},
                "ExpressionAttributeValues": {
                    ":n": value({name}),
                    ":kind": value("prlock-index"),
                    ":h": value(holder_key),
                },
            }
        }

    def _drop_index_if_empty(self, holder_key: str) -> None:
        """Delete a holder's index once it lists nothing (DynamoDB removes an emptied set). A
        concurrent acquire either lands first (the condition fails) or recreates the item."""
        try:
            self._ddb.delete_item(
                TableName=self.locks_table,
                Key={"run_id": value(HOLDER_INDEX_PREFIX + holder_key)},
                ConditionExpression="attribute_exists(run_id) AND attribute_not_exists(#n)",
                ExpressionAttributeNames={"#n": "names"},
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise

    def _repair_index(self, holder_key: str, name: str) -> None:
        """Drop ``name`` from the holder's index, provided the holder really does not hold it."""
        check = {
            "ConditionCheck": {
                "TableName": self.locks_table,
                "Key": self._key(name),
                "ConditionExpression": "attribute_not_exists(holder_key) OR holder_key <> :k",
                "ExpressionAttributeValues": {":k": value(holder_key)},
            }
        }
        try:
            self._ddb.transact_write_items(TransactItems=[check, self._index_update(holder_key, name, add=False)])
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise

    @staticmethod
    def _key(name: str) -> dict[str, Any]:
        return {"run_id": value(LOCK_PREFIX + name)}

    @staticmethod
    def _key_attrs(name: str) -> dict[str, Any]:
        return {"run_id": LOCK_PREFIX + name}


def _state_of(item: dict[str, Any]) -> _State:
    lock = None
    if "holder_key" in item:
        lock = PrLock(
            name=item["lock_name"],
            holder=Holder._from_attrs(item),
            run_id=item["lock_run_id"],
            order=item["lock_order"],
            acquired_at=float(item["acquired_at"]),
            expires_at=float(item["expires_at"]),
            epoch=int(item["epoch"]),
        )
    return _State(lock, int(item.get("version", 0)), int(item.get("epoch", 0)), item.get("txn"))
