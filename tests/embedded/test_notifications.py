"""Notifications end to end: the engine publishes each state change on the stack's EventBridge
bus, moto's rule delivers it to the events queue, and the stack writes it to events.jsonl."""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from typing import Any

import pytest
from support.waiting import wait_for

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.notify.events import Notifier
from lambda_runtime.schema import events as schema

pytestmark = pytest.mark.slow

MARKER = "log-line-" + secrets.token_hex(6)  # printed by the orders: must never reach an event
JOB = {
    "username": "tester",
    "name": "notified",
    "orders": [
        {"name": "build", "must_succeed": True, "cmds": [f"echo {MARKER}", "exit 3"]},
        {"name": "deploy", "depends_on": ["build"], "cmds": [f"echo {MARKER}"]},
    ],
}


@pytest.fixture()
def engine(aws):
    stack = EmbeddedStack(aws, prefix="n" + secrets.token_hex(4), settings_overrides={"watchdog_grace_seconds": 3})
    with stack:
        yield stack
    assert not stack.pump_errors


def run(engine: EmbeddedStack) -> dict[str, Any]:
    code, body = engine.submit(JOB)
    assert code == 202, body
    return engine.wait(body["run_id"], timeout=90)


def test_every_state_change_is_an_event(engine) -> None:
    assert engine.settings.event_bus and engine.events_log.parent == engine.log_dir
    done = run(engine)
    assert done["status"] == "failed"
    run_id = done["run_id"]
    events = sorted(engine.wait_events(run_id), key=lambda e: e["detail"]["time"])

    assert {e["source"] for e in events} == {schema.SOURCE}
    assert len({e["id"] for e in events}) == len(events)  # EventBridge's own id
    assert len({e["detail"]["event_id"] for e in events}) == len(events)  # ours, for consumers to dedupe
    assert all(e["detail"]["deployment"] == engine.settings.deployment_name for e in events)
    assert all(e["detail"]["job"] == "notified" and e["detail"]["trigger"] == "submit" for e in events)

    moves: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for e in events:
        if e["detail-type"] == schema.ORDER_STATE_CHANGE:
            moves[e["detail"]["order"]].append((e["detail"]["previous"], e["detail"]["status"]))
    assert dict(moves) == {
        "build": [("queued", "running"), ("running", "failed")],
        "deploy": [("queued", "skipped")],
    }
    by_id = {e["detail"]["event_id"]: e["detail"] for e in events}
    assert by_id[f"{run_id}:build:failed:1"]["exit_code"] == 3
    assert by_id[f"{run_id}:build:running:1"]["attempt"] == 1
    assert by_id[f"{run_id}:deploy:skipped:0"]["reason"] == "dependency 'build' did not succeed"

    run_events = [e["detail"] for e in events if e["detail-type"] == schema.RUN_STATE_CHANGE]
    finals = [d for d in run_events if d["final"]]
    assert len(finals) == 1 and all(d["status"] == "running" for d in run_events if not d["final"])
    (final,) = finals
    assert final["status"] == "failed" and final["event_id"] == f"{run_id}:#run:failed:0"
    assert final["orders"] == {"failed": 1, "skipped": 1}
    assert final["duration_s"] > 0 and final is run_events[-1]  # after every order's change

    text = engine.events_log.read_text()
    assert MARKER not in text and "log_tail" not in text
    # each line is one whole EventBridge event
    assert [json.loads(line)["id"] for line in text.splitlines()] == [e["id"] for e in engine.events()]


def test_a_failing_publisher_does_not_touch_the_run(engine) -> None:
    class Down:
        calls = 0

        def put_events(self, **_kw: Any) -> Any:
            Down.calls += 1
            raise ConnectionError("EventBridge is down")

    engine.orchestrator.notifier = Notifier(Down(), engine.settings.event_bus, "n")
    done = run(engine)
    assert done["status"] == "failed"
    assert {n: o["status"] for n, o in done["orders"].items()} == {"build": "failed", "deploy": "skipped"}
    # the orders' changes (two calls: one per evaluation) and the run's end (published just after
    # the run is marked finalized, so it may land a moment after the wait) were all attempted
    wait_for(lambda: Down.calls >= 3, timeout=15, what="the run's end to be attempted")
    assert engine.store.get_run(done["run_id"]).finalized
    assert all(e["detail-type"] != schema.ORDER_STATE_CHANGE for e in engine.events(done["run_id"]))
