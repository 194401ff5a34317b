"""Runs and their orders in the ``orders`` table, plus the events written alongside.

All of a run lives under one partition key and is read with one strongly consistent Query,
so the orchestrator never decides from a stale index. Every state change is a conditional
write; the event describing it goes into the same transaction, so an event exists if and
only if its transition happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lambda_runtime.aws.clients import error_code, is_conditional_failure
from lambda_runtime.observability.legs import current_trace
from lambda_runtime.schema import retention, transitions
from lambda_runtime.schema.records import (
    ORDER_SK_PREFIX,
    RUN_SK,
    LeaseFence,
    OrderRecord,
    RunRecord,
    RunSnapshot,
    order_sk,
)
from lambda_runtime.schema.status import OrderStatus, RunStatus
from lambda_runtime.store.codec import from_item, to_item, update_expression, value
from lambda_runtime.store.locks import LeaseLost
from lambda_runtime.store.slots import DeploymentSlots, SlotsFull

MAX_TRANSACT_ITEMS = 100
JOB_EVENT_SUBJECT = "#job"


@dataclass(frozen=True)
class Transition:
    """One order's move, checked against ``schema.transitions`` before it is written."""

    name: str
    from_status: tuple[OrderStatus, ...]
    to: OrderStatus
    fields: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for source in self.from_status:
            transitions.check_order(source, self.to)


def _running_delta(move: Transition) -> int:
    """+1 for an order that starts running, -1 for one that stops, 0 otherwise."""
    was = OrderStatus.RUNNING in move.from_status
    if move.to is OrderStatus.RUNNING:
        return 0 if was else 1
    return -1 if was else 0


class RunStore:
    def __init__(
        self,
        dynamodb: Any,
        orders_table: str,
        events_table: str,
        *,
        clock: Callable[[], float] = time.time,
        event_ttl_days: int = retention.EVENT_RETENTION_DAYS,
        run_retention_days: int = retention.RUN_RETENTION_DAYS,
    ):
        self._ddb = dynamodb
        self.orders_table = orders_table
        self.events_table = events_table
        self._clock = clock
        self._ttl = event_ttl_days * retention.DAY_SECONDS
        self._run_retention_days = run_retention_days

    # ---- events -------------------------------------------------------------------------
    def event_put(
        self, run_id: str, subject: str, event_type: str, detail: dict[str, Any] | None = None, *,
        order_trace: str | None = None, **attrs: Any
    ) -> dict[str, Any]:
        """The Put of one event item. ``trace`` is the leg that writes it; an order's event also names
        ``order_trace``, the order's own leg (what its commands see as ``IAC_CI_TRACE_ID``), so a
        move is found from the order's logs as well as from the wake-up that wrote it."""
        now = self._clock()
        ms = int(now * 1000)
        item = {
            "run_id": run_id,
            # microseconds keep causal order between events written in the same millisecond;
            # (subject, type) happens once per run (the transition that emits it is conditional),
            # so two events never share a sort key
            "sk": f"{int(now * 1_000_000):016d}#{subject}#{event_type}",
            "order_name": subject,
            "event_type": event_type,
            "epoch_ms": ms,
            "expire_at": int(now) + self._ttl,
            "detail": detail or {},
            **attrs,
        }
        trace = current_trace()  # the leg that writes it (``observability.legs``)
        if trace is not None:
            item["trace"] = trace
        if order_trace:
            item["order_trace"] = order_trace
        return {"Put": {"TableName": self.events_table, "Item": to_item(item)}}

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [from_item(i) for i in self._query(self.events_table, run_id)]

    # ---- runs ---------------------------------------------------------------------------
    def create_run(self, run: RunRecord) -> bool:
        try:
            self._ddb.put_item(
                TableName=self.orders_table,
                Item=to_item({**run.to_item(), "sk": RUN_SK}),
                ConditionExpression="attribute_not_exists(run_id)",
            )
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise

    def get_run(self, run_id: str) -> RunRecord | None:
        resp = self._ddb.get_item(TableName=self.orders_table, Key=self._key(run_id, RUN_SK), ConsistentRead=True)
        return RunRecord.from_item(from_item(resp["Item"])) if "Item" in resp else None

    def update_run(self, run_id: str, fields: dict[str, Any], *, unless_finalized: bool = False) -> bool:
        """Set fields on an existing run (optionally only while it is not final)."""
        expr, names, vals = update_expression(fields)
        cond = "attribute_exists(run_id)" + (" AND attribute_not_exists(finalized)" if unless_finalized else "")
        kwargs: dict[str, Any] = {
            "TableName": self.orders_table,
            "Key": self._key(run_id, RUN_SK),
            "UpdateExpression": expr,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": vals,
            "ConditionExpression": cond,
        }
        try:
            self._ddb.update_item(**kwargs)
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise

    def load(self, run_id: str) -> RunSnapshot:
        """The run and all its orders, typed, in one strongly consistent Query."""
        return RunSnapshot.from_items(*self.load_items(run_id))

    def load_items(
        self, run_id: str, fields: Sequence[str] | None = None, *, open_only: bool = False
    ) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """The raw run item and order items of one strongly consistent Query: optionally only
        ``fields``, and optionally only orders not yet final (``open_only``; the run item always
        comes back). For readers that merge a partial read with what they cached (the orchestrator)."""
        run: dict[str, Any] | None = None
        orders: dict[str, dict[str, Any]] = {}
        for raw in self._query(self.orders_table, run_id, fields, open_only=open_only):
            item = from_item(raw)
            if item["sk"] == RUN_SK:
                run = item
            elif item["sk"].startswith(ORDER_SK_PREFIX):
                item.setdefault("name", item["sk"][len(ORDER_SK_PREFIX) :])
                orders[item["name"]] = item
        return run, orders

    # ---- orders -------------------------------------------------------------------------
    def put_orders(self, run_id: str, orders: Iterable[OrderRecord]) -> bool:
        """Insert queued orders, in transactions that also check the run is still ``packaging``.

        No order can start before the run leaves ``packaging``, so overwriting an order here
        is harmless; once the run is ``running`` (another delivery of the same job finished
        first) every further write is refused and this returns False, so a duplicate delivery
        can never reset an order that already started.
        """
        puts = [{"Put": {"TableName": self.orders_table,
                         "Item": to_item({**o.to_item(), "run_id": run_id, "sk": order_sk(o.name)})}}
                for o in orders]
        guard = {"ConditionCheck": {
            "TableName": self.orders_table, "Key": self._key(run_id, RUN_SK),
            "ConditionExpression": "#st = :p", "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":p": value(RunStatus.PACKAGING.value)},
        }}
        step = MAX_TRANSACT_ITEMS - 1
        for i in range(0, len(puts), step):
            try:
                self._ddb.transact_write_items(TransactItems=[guard, *puts[i : i + step]])
            except Exception as exc:
                if error_code(exc) == "TransactionCanceledException":
                    return False
                raise
        return True

    def transition(
        self,
        run_id: str,
        name: str,
        *,
        from_status: Iterable[OrderStatus],
        to: OrderStatus,
        fields: dict[str, Any] | None = None,
        fence: LeaseFence | None = None,
        event_detail: dict[str, Any] | None = None,
    ) -> bool:
        """Conditionally move one order between statuses, with its event, in one transaction."""
        move = Transition(name, tuple(from_status), to, fields or {}, event_detail)
        return name in self.transition_many(run_id, [move], fence=fence)

    def transition_many(
        self, run_id: str, moves: Sequence[Transition], *, fence: LeaseFence | None = None,
        slots: DeploymentSlots | None = None, order_traces: Mapping[str, str] | None = None,
    ) -> set[str]:
        """Apply many conditional transitions (each with its event) in as few transactions as
        possible; returns the orders that moved. An order whose condition no longer holds (it
        was moved by someone else) is dropped and the rest retried; a failed fence raises
        ``LeaseLost`` because nothing this holder writes may land any more. With ``slots``, each
        transaction also moves the deployment's running counter by what it starts and ends, and
        raises ``SlotsFull`` when a start would exceed the cap. ``order_traces``: each order's own
        leg trace (``OrderRecord.trace``), for its events' ``order_trace``."""
        moved: set[str] = set()
        offset = (1 if fence else 0) + (1 if slots else 0)
        per_tx = (MAX_TRANSACT_ITEMS - offset) // 2
        todo = list(moves)
        while todo:
            batch, todo = todo[:per_tx], todo[per_tx:]
            while batch:
                items = [fence.condition_check()] if fence else []
                delta = sum(_running_delta(m) for m in batch) if slots is not None else 0
                if slots is not None and delta:
                    items.append(slots.update(delta))
                first = len(items)  # where the batch's own items begin
                for m in batch:
                    items.append(
                        self._status_update(run_id, order_sk(m.name), m.from_status, {"status": m.to.value, **m.fields})
                    )
                    items.append(self.event_put(run_id, m.name, transitions.order_event(m.to), m.detail,
                                                order_trace=(order_traces or {}).get(m.name)))
                try:
                    self._ddb.transact_write_items(TransactItems=items)
                    moved.update(m.name for m in batch)
                    break
                except Exception as exc:
                    if error_code(exc) != "TransactionCanceledException":
                        raise
                    codes = [r.get("Code") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]
                    if fence and codes and codes[0] == "ConditionalCheckFailed":
                        raise LeaseLost(run_id) from None
                    slot_refused = first > (1 if fence else 0) and codes[first - 1:first] == ["ConditionalCheckFailed"]
                    if slot_refused:
                        raise SlotsFull(run_id) from None
                    stale = {
                        batch[(i - first) // 2].name
                        for i, c in enumerate(codes)
                        if i >= first and c == "ConditionalCheckFailed"
                    }
                    if not stale:
                        raise  # a conflict with a concurrent transaction: let the caller retry
                    batch = [m for m in batch if m.name not in stale]
        return moved

    def transition_run(
        self,
        run_id: str,
        *,
        from_status: RunStatus,
        to: RunStatus,
        fields: dict[str, Any] | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
        **event_attrs: Any,
    ) -> bool:
        """Conditionally move the run item along a declared edge (and set more fields), with an
        optional job event in the same transaction."""
        transitions.check_run(from_status, to)
        items = [self._status_update(run_id, RUN_SK, (from_status,), {"status": to.value, **(fields or {})})]
        if event:
            items.append(self.event_put(run_id, JOB_EVENT_SUBJECT, event[0], event[1], **event_attrs))
        return self._transact(items)

    def _status_update(
        self, run_id: str, sk: str, from_status: Iterable[StrEnum], fields: dict[str, Any]
    ) -> dict[str, Any]:
        expr, names, vals = update_expression({"updated_at": self._clock(), **fields})
        placeholders = []
        for i, s in enumerate(from_status):
            vals[f":f{i}"] = value(s.value)
            placeholders.append(f":f{i}")
        names["#st"] = "status"
        return {
            "Update": {
                "TableName": self.orders_table,
                "Key": self._key(run_id, sk),
                "UpdateExpression": expr,
                "ConditionExpression": f"#st IN ({', '.join(placeholders)})",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": vals,
            }
        }

    def set_order_fields(self, run_id: str, name: str, fields: dict[str, Any]) -> None:
        self.set_many_order_fields(run_id, {name: fields})

    def set_many_order_fields(self, run_id: str, fields: dict[str, dict[str, Any]]) -> None:
        """Set ``fields`` on existing orders: one UpdateItem for one order, else as few transactions as
        fit (a layer of dispatches records its watchdogs in one call instead of one per order)."""
        updates = []
        for name, values in sorted(fields.items()):
            expr, names, vals = update_expression(values)
            updates.append({"Update": {"TableName": self.orders_table, "Key": self._key(run_id, order_sk(name)),
                                       "UpdateExpression": expr, "ExpressionAttributeNames": names,
                                       "ExpressionAttributeValues": vals,
                                       "ConditionExpression": "attribute_exists(run_id)"}})
        for i in range(0, len(updates), MAX_TRANSACT_ITEMS):
            chunk = updates[i:i + MAX_TRANSACT_ITEMS]
            if len(chunk) == 1:
                self._ddb.update_item(**chunk[0]["Update"])
            else:
                self._ddb.transact_write_items(TransactItems=chunk)

    def finalize(
        self,
        run_id: str,
        source: RunStatus,
        status: RunStatus,
        summary: dict[str, Any],
        *,
        fence: LeaseFence | None = None,
        orders: Iterable[str] = (),
    ) -> bool:
        """Mark the run final exactly once; False if it already was (or the fence failed).

        The run's items get their TTL here (``schema.retention``): first every order item, in fenced
        batches, then the run item with the final status. A crash in between leaves the run not final,
        so the next holder finalizes it again and writes them all once more (the same attribute)."""
        transitions.check_run(source, status)
        now = self._clock()
        expire_at = retention.expire_at(now, self._run_retention_days)
        if not self._expire_orders(run_id, list(orders), expire_at, fence):
            return False
        expr, names, vals = update_expression({"status": status.value, "finalized": True, "finished_at": now,
                                               "expire_at": expire_at})
        items: list[dict[str, Any]] = []
        if fence:
            items.append(fence.condition_check())
        items.append(
            {
                "Update": {
                    "TableName": self.orders_table,
                    "Key": self._key(run_id, RUN_SK),
                    "UpdateExpression": expr,
                    "ConditionExpression": "attribute_exists(run_id) AND attribute_not_exists(finalized)",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": vals,
                }
            }
        )
        items.append(self.event_put(run_id, JOB_EVENT_SUBJECT, "job_completed", summary))
        return self._transact(items)

    def _expire_orders(self, run_id: str, orders: list[str], expire_at: int, fence: LeaseFence | None) -> bool:
        """Write ``expire_at`` on each order item, one transaction per 99 (plus the fence); False when
        the run is no longer this holder's or an order item is missing."""
        per_tx = MAX_TRANSACT_ITEMS - (1 if fence else 0)
        for i in range(0, len(orders), per_tx):
            items = [fence.condition_check()] if fence else []
            items += [{"Update": {
                "TableName": self.orders_table, "Key": self._key(run_id, order_sk(name)),
                "UpdateExpression": "SET #x = :x", "ConditionExpression": "attribute_exists(run_id)",
                "ExpressionAttributeNames": {"#x": "expire_at"}, "ExpressionAttributeValues": {":x": value(expire_at)},
            }} for name in orders[i:i + per_tx]]
            if not self._transact(items):
                return False
        return True

    # ---- helpers ------------------------------------------------------------------------
    def _transact(self, items: list[dict[str, Any]]) -> bool:
        try:
            self._ddb.transact_write_items(TransactItems=items)
            return True
        except Exception as exc:
            if error_code(exc) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]
                if any(r in ("ConditionalCheckFailed",) for r in reasons) or not reasons:
                    return False
            raise

    def _query(self, table: str, run_id: str, fields: Sequence[str] | None = None, *,
               open_only: bool = False) -> Iterable[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "run_id = :r",
            "ExpressionAttributeValues": {":r": value(run_id)},
            "ConsistentRead": True,
        }
        names: dict[str, str] = {}
        if fields:
            names = {f"#p{i}": f for i, f in enumerate(dict.fromkeys(["run_id", "sk", *fields]))}
            kwargs["ProjectionExpression"] = ", ".join(names)
        if open_only:  # the run item is the one with order_total
            names.update({"#fst": "status", "#fot": "order_total"})
            kwargs["ExpressionAttributeValues"].update(
                {":fq": value(OrderStatus.QUEUED.value), ":fr": value(OrderStatus.RUNNING.value),
                 ":fa": value(OrderStatus.AWAITING_APPROVAL.value)})
            kwargs["FilterExpression"] = "#fst IN (:fq, :fr, :fa) OR attribute_exists(#fot)"
        if names:
            kwargs["ExpressionAttributeNames"] = names
        while True:
            resp = self._ddb.query(**kwargs)
            yield from resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    @staticmethod
    def _key(run_id: str, sk: str) -> dict[str, Any]:
        return {"run_id": value(run_id), "sk": value(sk)}
