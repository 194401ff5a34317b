"""Typed records and the declared state machine: what is stored, read back, and refused."""

from __future__ import annotations

import pytest

from lambda_runtime.schema import transitions
from lambda_runtime.schema.records import (
    STATIC_ORDER_FIELDS,
    LeaseFence,
    OrderInput,
    OrderRecord,
    RunRecord,
    RunSnapshot,
)
from lambda_runtime.schema.status import ORDER_FINAL, RUN_FINAL, OrderStatus, RunStatus
from lambda_runtime.store.runs import Transition
from lambda_runtime.summary import run_summary


def test_order_record_round_trips_through_its_item() -> None:
    order = OrderRecord(name="apply", status=OrderStatus.RUNNING, target="codebuild", timeout=600,
                        depends_on=("plan",), must_succeed=False, has_artifacts=True,
                        inputs=(OrderInput("plan", "plan.out"),), attempt=2, dispatched_at=12.5)
    item = order.to_item()
    assert item["status"] == "running" and item["depends_on"] == ["plan"]
    assert item["inputs"] == [{"from": "plan", "path": "plan.out"}]
    assert item["must_succeed"] is False  # a False that matters is written
    assert "exit_code" not in item  # absent, not null
    assert OrderRecord.from_item(item) == order


def test_order_record_reads_its_name_from_the_sort_key_and_ignores_unknown_attributes() -> None:
    order = OrderRecord.from_item({"sk": "order#lint", "run_id": "r", "status": "queued", "from_the_future": 1})
    assert order.name == "lint" and order.status is OrderStatus.QUEUED


def test_run_record_flags_are_absent_until_set() -> None:
    """``attribute_not_exists(finalized)`` guards cancel and finalize: a written False would break both."""
    item = RunRecord(run_id="r", status=RunStatus.ACCEPTED, order_total=3).to_item()
    assert "finalized" not in item and "cancel_requested" not in item
    assert RunRecord(run_id="r", finalized=True).to_item()["finalized"] is True
    assert RunRecord.from_item(item) == RunRecord(run_id="r", status=RunStatus.ACCEPTED, order_total=3)


def test_update_keeps_statuses_typed() -> None:
    order = OrderRecord(name="a")
    order.update({"status": "succeeded", "exit_code": 0, "not_a_field": 1, "reason": None})
    assert order.status is OrderStatus.SUCCEEDED and order.exit_code == 0 and order.reason is None


def test_static_fields_are_fields_of_the_record() -> None:
    assert set(STATIC_ORDER_FIELDS) <= set(OrderRecord.__dataclass_fields__)


def test_fence_is_a_condition_on_owner_and_epoch() -> None:
    check = LeaseFence("locks", "r1", "me", 7).condition_check()["ConditionCheck"]
    assert check["TableName"] == "locks" and check["Key"] == {"run_id": {"S": "r1"}}
    assert check["ExpressionAttributeValues"] == {":o": {"S": "me"}, ":e": {"N": "7"}}


@pytest.mark.parametrize(
    ("source", "target"),
    [(OrderStatus.SUCCEEDED, OrderStatus.RUNNING), (OrderStatus.RUNNING, OrderStatus.QUEUED),
     (OrderStatus.QUEUED, OrderStatus.SUCCEEDED), (OrderStatus.SKIPPED, OrderStatus.QUEUED)],
)
def test_undeclared_order_moves_are_refused_before_any_write(source: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(transitions.IllegalTransition):
        Transition("a", (source,), target)


def test_no_order_leaves_a_final_status() -> None:
    assert not [edge for edge in transitions.ORDER_EDGES if edge[0] in ORDER_FINAL]


def test_no_run_leaves_a_final_status_and_every_non_final_one_can_end() -> None:
    assert not [edge for edge in transitions.RUN_EDGES if edge[0] in RUN_FINAL]
    for status in RunStatus:
        if not status.terminal:
            assert {dst for src, dst in transitions.RUN_EDGES if src is status} >= RUN_FINAL, status


def test_every_order_status_is_reachable_from_queued() -> None:
    reached, todo = {OrderStatus.QUEUED}, [OrderStatus.QUEUED]
    while todo:
        src = todo.pop()
        for a, b in transitions.ORDER_EDGES:
            if a is src and b not in reached:
                reached.add(b)
                todo.append(b)
    assert reached == set(OrderStatus)


def test_run_edges_refuse_skipping_packaging() -> None:
    with pytest.raises(transitions.IllegalTransition):
        transitions.check_run(RunStatus.ACCEPTED, RunStatus.RUNNING)
    transitions.check_run(RunStatus.PACKAGING, RunStatus.PACKAGING_FAILED)


def test_order_sources_and_events() -> None:
    assert set(transitions.order_sources(OrderStatus.CANCELLED)) == {
        OrderStatus.QUEUED, OrderStatus.RUNNING, OrderStatus.AWAITING_APPROVAL}
    assert transitions.order_event(OrderStatus.TIMED_OUT) == "order_timed_out"


def test_summary_shape_durations_and_layers() -> None:
    snap = RunSnapshot(
        RunRecord(run_id="r1", status=RunStatus.FAILED, name="job", trace_id="r1:1", packaging_error=None),
        {
            "b": OrderRecord(name="b", status=OrderStatus.SKIPPED, depends_on=("a",)),
            "a": OrderRecord(name="a", status=OrderStatus.FAILED, started_at=10.0, finished_at=12.25, exit_code=1,
                             log_tail="boom"),
        },
    )
    summary = run_summary(snap)
    assert list(summary) == ["run_id", "status", "name", "trace_id", "flow_id", "repo", "pr_number", "commit",
                             "vcs", "installation_id", "created_at", "error", "command", "trigger", "pr_url",
                             "plan_run_id", "upstream_run_id", "upstream_job", "order_layers", "orders"]
    assert summary["order_layers"] == [["a"], ["b"]]
    assert list(summary["orders"]) == ["a", "b"]
    assert summary["orders"]["a"]["duration_s"] == 2.25 and summary["orders"]["b"]["duration_s"] is None
    assert run_summary(snap, status="cancelled")["status"] == "cancelled"


def test_summary_lists_orders_in_execution_order_not_by_name() -> None:
    snap = RunSnapshot(RunRecord(run_id="r1", name="job"), {
        "a-apply": OrderRecord(name="a-apply", depends_on=("z-plan",)),
        "z-plan": OrderRecord(name="z-plan"),
        "m-notify": OrderRecord(name="m-notify", depends_on=("a-apply",)),
        "b-plan": OrderRecord(name="b-plan"),
    })
    assert list(run_summary(snap)["orders"]) == ["b-plan", "z-plan", "a-apply", "m-notify"]
