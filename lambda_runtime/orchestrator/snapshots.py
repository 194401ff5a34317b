"""Reading a run for a decision, re-reading only what can still change.

After one full read, a per-run cache holds what never changes again: each order's static
fields (fixed at packaging), and the status of orders that reached a final status. Later reads
fetch the run item and the open orders only, with a projection. Any order found in neither
place (another invocation finished it) makes the read a full one again, so the cache can make
a read cheaper but never staler than the table.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from lambda_runtime.schema.records import STATIC_ORDER_FIELDS, RunSnapshot
from lambda_runtime.schema.status import RunStatus
from lambda_runtime.store.runs import RunStore

# what every evaluation has to re-read (run item fields included)
HOT_FIELDS = (
    "status",
    "deadline",
    "cancel_requested",
    "finalized",
    "trace_id",
    "attempt",
    "dispatched_at",
    "watchdog",
    "dispatch_ref",
    "vcs",
    "vcs_updated_at",
    "mask_salt",
    "awaiting_since",
    "timer",
    "approvals",
    "rejection",
    # the run item's, for the lock and requirement checks at dispatch, a superseded run's cancel,
    # and the locks a run gives back when it ends (a few bytes of one item)
    "cancel_running",
    "repo",
    "pr_number",
    "commit",
    "installation_id",
    "command",
    "plan_run_id",
    "lock_holder",
    "pr_url",
    "release_locks",
    "lock_ttl_seconds",
)
CACHED_RUNS = 256


@dataclass
class _Cached:
    static: dict[str, dict[str, Any]]
    final: dict[str, str] = field(default_factory=dict)


def cacheable(snap: RunSnapshot) -> bool:
    """A full read the cache keeps: a running run with orders, the only runs read again and again
    for a decision that dispatches. ``observability.metrics.ReadyTimes`` keeps the same runs, so
    a run served from here always has its ready times."""
    return snap.run is not None and snap.run.status is RunStatus.RUNNING and bool(snap.orders)


class SnapshotCache:
    def __init__(self, store: RunStore, *, capacity: int = CACHED_RUNS):
        self._store = store
        self._capacity = capacity
        self._runs: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, run_id: str) -> RunSnapshot:
        with self._lock:
            cached = self._runs.get(run_id)
        if cached is not None:
            run, orders = self._store.load_items(run_id, fields=HOT_FIELDS, open_only=True)
            static, final = cached.static, cached.final
            if run is not None and all(n in orders or n in final for n in static):
                merged = {n: {**static.get(n, {}), **item} for n, item in orders.items()}
                for name, status in final.items():
                    merged.setdefault(name, {**static[name], "status": status})
                return RunSnapshot.from_items(run, merged)
        run, orders = self._store.load_items(run_id)
        snap = RunSnapshot.from_items(run, orders)
        if cacheable(snap):
            with self._lock:
                self._runs[run_id] = _Cached({n: {k: o[k] for k in STATIC_ORDER_FIELDS if k in o}
                                              for n, o in orders.items()})
                while len(self._runs) > self._capacity:
                    self._runs.popitem(last=False)
            self.remember_final(run_id, snap)
        return snap

    def remember_final(self, run_id: str, snap: RunSnapshot) -> None:
        with self._lock:
            cached = self._runs.get(run_id)
            if cached is not None:
                for name, order in snap.orders.items():
                    if order.status.terminal:
                        cached.final[name] = order.status.value
