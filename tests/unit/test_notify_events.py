"""The EventBridge publisher (``notify.events``) against moto's EventBridge over HTTP: a rule on a
bus of the test's own delivers to an SQS queue, which the tests read back."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from support.faults.aws_faults import AwsFaults

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.notify.events import MAX_BYTES, Notifier, entry_size
from lambda_runtime.schema import events as schema
from lambda_runtime.schema.records import OrderRecord, RunRecord
from lambda_runtime.schema.status import OrderStatus, RunStatus
from lambda_runtime.settings import Settings


@pytest.fixture()
def bus(clients: AwsClients) -> Iterator[tuple[str, str]]:
    """(bus name, queue URL): a bus whose rule takes every iac-ci event to a queue."""
    name = "n" + secrets.token_hex(4)
    clients.events.create_event_bus(Name=name)
    url = clients.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients.events.put_rule(Name=name, EventBusName=name, EventPattern=json.dumps({"source": [schema.SOURCE]}))
    clients.events.put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "q", "Arn": arn}])
    yield name, url
    clients.events.remove_targets(Rule=name, EventBusName=name, Ids=["q"])
    clients.events.delete_rule(Name=name, EventBusName=name)
    clients.events.delete_event_bus(Name=name)


def delivered(clients: AwsClients, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        got = clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return out
        out += [json.loads(m["Body"]) for m in got]
        clients.sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])


class Counting:
    """The real client, with each PutEvents request's entries recorded."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 (boto3's name)
        self.calls.append(Entries)
        return self.client.put_events(Entries=Entries)


class Refusing(Counting):
    """EventBridge accepting part of a request: ``refuse(call, index)`` names (call number, entry
    index) refused with ``code``; the accepted entries really go to moto."""

    def __init__(self, client: Any, refuse: set[tuple[int, int]], code: str = "ThrottlingException"):
        super().__init__(client)
        self.refuse, self.code = refuse, code

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        n = len(self.calls)
        self.calls.append(Entries)
        refused = {i for c, i in self.refuse if c == n}
        sent = [e for i, e in enumerate(Entries) if i not in refused]
        answers = iter(self.client.put_events(Entries=sent)["Entries"] if sent else [])
        out = [{"ErrorCode": self.code, "ErrorMessage": "refused (test)"} if i in refused else next(answers)
               for i in range(len(Entries))]
        return {"FailedEntryCount": len(refused), "Entries": out}


def run_record(**kw: Any) -> RunRecord:
    return RunRecord(run_id=kw.pop("run_id", "r-" + secrets.token_hex(4)), name="deploy", repo="acme/infra",
                     commit="abc123", pr_number=7, trigger="pull_request", **kw)


def details(n: int, run_id: str = "r1") -> list[tuple[str, schema.EventDetail]]:
    return [(schema.ORDER_STATE_CHANGE, schema.OrderStateChange(
        event_id=schema.event_id(run_id, f"o{i}", "running", 1), deployment="t", run_id=run_id, job="j", time=1.0 + i,
        order=f"o{i}", status=OrderStatus.RUNNING, previous=OrderStatus.QUEUED, attempt=1)) for i in range(n)]


def test_25_events_go_in_3_requests_and_all_arrive(clients, bus) -> None:
    name, url = bus
    client = Counting(clients.events)
    notifier = Notifier(client, name, "t")
    assert notifier.publish_many(details(25)) == 25
    assert [len(c) for c in client.calls] == [10, 10, 5]
    got = delivered(clients, url)
    assert sorted(e["detail"]["order"] for e in got) == sorted(f"o{i}" for i in range(25))
    assert {e["source"] for e in got} == {"iac-ci"} and {e["detail-type"] for e in got} == {schema.ORDER_STATE_CHANGE}
    assert len({e["detail"]["event_id"] for e in got}) == 25


def test_refused_entries_alone_are_sent_again(clients, bus) -> None:
    name, url = bus
    client = Refusing(clients.events, {(0, 1), (0, 3), (1, 0)})  # 2 refused, then 1 of those again
    slept: list[float] = []
    notifier = Notifier(client, name, "t", sleep=slept.append)
    assert notifier.publish_many(details(5)) == 5
    assert [[json.loads(e["Detail"])["order"] for e in c] for c in client.calls] == [
        ["o0", "o1", "o2", "o3", "o4"], ["o1", "o3"], ["o1"]]
    assert len(slept) == 2 and slept[1] > slept[0]
    assert sorted(e["detail"]["order"] for e in delivered(clients, url)) == ["o0", "o1", "o2", "o3", "o4"]
    assert (notifier.published, notifier.dropped) == (5, 0)


def test_retries_are_bounded_and_permanent_refusals_not_retried(clients, bus) -> None:
    name, url = bus
    always = Refusing(clients.events, {(c, 0) for c in range(10)})
    notifier = Notifier(always, name, "t", sleep=lambda _s: None)
    assert notifier.publish_many(details(2)) == 1
    assert [len(c) for c in always.calls] == [2, 1, 1]  # max_attempts sends of the refused entry
    assert notifier.dropped == 1

    malformed = Refusing(clients.events, {(0, 0)}, code="MalformedDetail")
    notifier = Notifier(malformed, name, "t", sleep=lambda _s: None)
    assert notifier.publish_many(details(2)) == 1
    assert len(malformed.calls) == 1 and notifier.dropped == 1
    assert len(delivered(clients, url)) == 2


def test_empty_bus_publishes_nothing(clients, stack) -> None:
    settings: Settings = stack[0].model_copy(update={"event_bus": ""})
    notifier = Notifier.from_settings(settings, clients)
    assert notifier.client is None and not notifier.enabled
    run = run_record()
    assert notifier.order_changes(run, [(OrderRecord("a", status=OrderStatus.RUNNING), OrderStatus.QUEUED)]) == 0
    assert notifier.publish_run_finished({"run_id": run.run_id, "status": "failed", "orders": {}}) == 0
    assert notifier.publish(schema.DRIFT_DETECTED, {"run_id": run.run_id}) == 0

    class NoCalls:
        def put_events(self, **_kw: Any) -> None:
            raise AssertionError("called")

    assert Notifier(NoCalls(), "").publish_many(details(3)) == 0


def test_a_failing_endpoint_never_raises(clients, aws) -> None:
    fast = AwsClients(region=aws.region, config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
    faults = AwsFaults(first_n=1000, services=("events",)).install(fast)
    try:
        notifier = Notifier(fast.events, "anything", "t", sleep=lambda _s: None)
        assert notifier.publish_many(details(25)) == 0
        assert faults.calls[("events", "PutEvents")] == 2  # the first request's retries, then it stops
        assert notifier.dropped == 25
    finally:
        faults.uninstall()
    assert Notifier(clients.events, "no-such-bus-" + secrets.token_hex(3)).publish_many(details(1)) == 0

    class Broken:
        def put_events(self, **_kw: Any) -> Any:
            raise RuntimeError("boom")

    broken = Notifier(Broken(), "bus")
    assert broken.publish_many(details(3)) == 0
    assert broken.order_changes(run_record(), [(OrderRecord("a", status=OrderStatus.RUNNING), OrderStatus.QUEUED)]) == 0
    assert broken.publish_run_finished({"run_id": "r", "status": "not-a-status"}) == 0  # a bad summary, too


def test_order_and_run_details(clients, bus) -> None:
    name, url = bus
    notifier = Notifier(clients.events, name, "prod", clock=lambda: 1000.5)
    run = run_record(run_id="r-1", upstream_run_id="r-0")
    failed = OrderRecord("plan", status=OrderStatus.FAILED, attempt=1, exit_code=3, log_tail="TOKEN=hunter2-tail",
                         reason="x" * 10_000, secret_refs=({"env": "TOKEN", "ssm": "/iac-ci/t"},),
                         trace="r-1:990.250001")
    assert notifier.order_changes(run, [(failed, OrderStatus.RUNNING)]) == 1
    summary = {"run_id": "r-1", "status": "failed", "name": "deploy", "repo": "acme/infra", "commit": "abc123",
               "pr_number": 7, "trigger": "pull_request", "upstream_run_id": "r-0", "created_at": 990.0,
               "finished_at": 1000.25, "orders": {"plan": {"status": "failed", "log_tail": "TOKEN=hunter2-tail"},
                                                  "apply": {"status": "skipped"}, "lint": {"status": "failed"}}}
    assert notifier.publish_run_finished(summary) == 1
    order_event, run_event = sorted(delivered(clients, url), key=lambda e: e["detail-type"])
    assert order_event["detail-type"] == schema.ORDER_STATE_CHANGE
    detail = order_event["detail"]
    assert detail == {
        "schema_version": 1, "event_id": "r-1:plan:failed:1", "deployment": "prod", "run_id": "r-1", "job": "deploy",
        "repo": "acme/infra", "commit": "abc123", "pr_number": 7, "trigger": "pull_request", "time": 1000.5,
        "order": "plan", "status": "failed", "previous": "running", "attempt": 1, "exit_code": 3,
        "reason": detail["reason"], "trace": "r-1:990.250001"}  # the order's own leg
    assert len(detail["reason"]) == schema.REASON_MAX_CHARS and detail["reason"].endswith("[truncated]")
    assert run_event["detail"] == {
        "schema_version": 1, "event_id": "r-1:#run:failed:0", "deployment": "prod", "run_id": "r-1", "job": "deploy",
        "repo": "acme/infra", "commit": "abc123", "pr_number": 7, "trigger": "pull_request", "time": 1000.5,
        "status": "failed", "final": True, "orders": {"failed": 2, "skipped": 1}, "upstream_run_id": "r-0",
        "duration_s": 10.25}
    assert "hunter2" not in json.dumps([order_event, run_event])
    started = notifier.run_change({"run_id": "r-1", "orders": {"a": {"status": "queued"}}},
                                  RunStatus.RUNNING, final=False, now=5.0)
    assert (started.event_id, started.final, started.duration_s, started.orders) == (
        "r-1:#run:running:0", False, None, {"queued": 1})
    packaged_before_traces = OrderRecord("old", status=OrderStatus.SKIPPED)  # trace ""
    assert notifier.order_change(run, packaged_before_traces, OrderStatus.QUEUED, 5.0).trace is None


def test_an_oversized_reason_is_cut_to_fit(clients, bus) -> None:
    name, url = bus
    client = Counting(clients.events)
    notifier = Notifier(client, name, "t")
    huge = {"event_id": "r:x:drifted:1", "run_id": "r", "reason": "é" * 300_000, "time": 1.0}
    assert notifier.publish(schema.DRIFT_DETECTED, huge) == 1
    (entry,) = client.calls[0]
    assert entry_size(entry) <= MAX_BYTES and entry["DetailType"] == schema.DRIFT_DETECTED
    assert json.loads(entry["Detail"])["reason"].endswith("[truncated]")
    assert Notifier(client, name).publish(schema.DRIFT_DETECTED, {"run_id": "r", "blob": "x" * MAX_BYTES}) == 0
    assert len(client.calls) == 1  # not sent: nothing in it may be cut


def test_the_schema_documents_every_field() -> None:
    for kind, model_schema in schema.detail_schemas().items():
        assert kind in schema.DETAIL_TYPES
        for field_name, prop in model_schema["properties"].items():
            assert prop.get("description"), f"{kind}.{field_name} has no description"
    assert schema.event_id("r", "#run", "failed") == "r:#run:failed:0"
    with pytest.raises(ValueError):
        schema.OrderStateChange(event_id="e", deployment="d", run_id="r", job="j", time=0, order="o",
                                status=OrderStatus.RUNNING, previous=OrderStatus.QUEUED, log_tail="no")


def test_a_projected_run_is_named_from_one_whole_read(clients, bus) -> None:
    name, url = bus
    whole = run_record(run_id="r-9")
    reads: list[str] = []

    def lookup(run_id: str) -> RunRecord:
        reads.append(run_id)
        return whole

    notifier = Notifier(clients.events, name, "t", lookup=lookup)
    projected = RunRecord(run_id="r-9", repo="acme/infra", pr_number=7, commit="abc123")  # no name, no trigger
    for status in (OrderStatus.RUNNING, OrderStatus.SUCCEEDED):
        assert notifier.order_changes(projected, [(OrderRecord("a", status=status, attempt=1), OrderStatus.QUEUED)])
    assert reads == ["r-9"]
    assert [(e["detail"]["job"], e["detail"]["trigger"]) for e in delivered(clients, url)] == [
        ("deploy", "pull_request")] * 2

    def unreadable(_run_id: str) -> RunRecord:
        raise RuntimeError("DynamoDB is down")

    fallback = Notifier(clients.events, name, "t", lookup=unreadable)
    assert fallback.order_changes(projected, [(OrderRecord("a", status=OrderStatus.RUNNING), OrderStatus.QUEUED)])
    assert [e["detail"]["job"] for e in delivered(clients, url)] == [""]
