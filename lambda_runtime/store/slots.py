"""The deployment-wide cap on running orders: one counter every run shares.

``running`` counts the orders of every run that are ``running``. It changes only inside the
transactions that move orders into or out of ``running`` (``RunStore.transition_many``), so it
cannot drift from the orders table: an increment is conditioned on staying within the cap, and
a decrement rides with the result that frees the slot. A run that found no free slot adds
itself to ``waiting``; whoever frees slots wakes the waiters. The waiter registers *before* it
reads the counter again, and the freer decrements *before* it reads the waiters, so one of the
two always sees the other (no lost wake-up).

Lambda's reserved concurrency and CodeBuild's project limit are no substitute: a throttled
asynchronous invoke waits in Lambda's own queue while the order's watchdog runs, and a build
over the project limit fails outright. Queueing in the engine keeps such orders ``queued``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lambda_runtime.store.codec import value

SLOTS_KEY = "#deployment-slots"  # an item of the locks table, beside the runs' leases


class SlotsFull(RuntimeError):
    """Another run took the last slots between this run's read and its write: decide again."""


@dataclass
class DeploymentSlots:
    dynamodb: Any
    table: str
    cap: int

    def _key(self) -> dict[str, Any]:
        return {"run_id": value(SLOTS_KEY)}

    def running(self) -> int:
        item = self.dynamodb.get_item(TableName=self.table, Key=self._key(), ConsistentRead=True).get("Item") or {}
        return int(item.get("running", {}).get("N", "0"))

    def update(self, delta: int) -> dict[str, Any]:
        """The transaction item that moves the counter by ``delta`` (an increment only within the cap)."""
        update: dict[str, Any] = {
            "TableName": self.table, "Key": self._key(), "UpdateExpression": "ADD running :d",
            "ExpressionAttributeValues": {":d": value(delta)},
        }
        if delta > 0:
            update["ConditionExpression"] = "attribute_not_exists(running) OR running <= :room"
            update["ExpressionAttributeValues"][":room"] = value(self.cap - delta)
        return {"Update": update}

    def wait(self, run_id: str) -> None:
        self.dynamodb.update_item(TableName=self.table, Key=self._key(), UpdateExpression="ADD waiting :r",
                                  ExpressionAttributeValues={":r": {"SS": [run_id]}})

    def take_waiters(self) -> set[str]:
        """The runs waiting for a slot, removed from the list (each is woken once per free-up)."""
        item = self.dynamodb.get_item(TableName=self.table, Key=self._key(), ConsistentRead=True).get("Item") or {}
        runs = set(item.get("waiting", {}).get("SS", []))
        if runs:
            self.dynamodb.update_item(TableName=self.table, Key=self._key(), UpdateExpression="DELETE waiting :r",
                                      ExpressionAttributeValues={":r": {"SS": sorted(runs)}})
        return runs
