"""The watchdog definition file, executed by moto's state-machine interpreter against moto's S3."""
from __future__ import annotations

import json
import time

from lambda_runtime import watchdog
from lambda_runtime.schema import layout


def wait_execution(sfn, arn: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = sfn.describe_execution(executionArn=arn)
        if d["status"] != "RUNNING" or time.monotonic() > deadline:
            return d
        time.sleep(0.2)


def read(clients, bucket: str, key: str) -> dict | None:
    try:
        return json.loads(clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except clients.s3.exceptions.NoSuchKey:
        return None


def wake_key(run_id: str, subject: str) -> str:
    return layout.control_key(run_id, f"wake-{subject}")


def start(clients, settings, run_id: str, key: str, *, deadline: float | None = None) -> str:
    return watchdog.start(clients.sfn, settings.watchdog_arn, run_id=run_id, subject="build",
                          deadline=deadline if deadline is not None else time.time() + 1,
                          bucket=settings.internal_bucket, key=key, body='{"status": "timed_out"}')


def test_definition_keeps_input_between_states() -> None:
    d = watchdog.definition()
    for name, state in d["States"].items():
        if state["Type"] == "Task":
            assert "ResultPath" in state, f"{name} would replace its input with the task result"
            assert state["Parameters"]["Bucket.$"] == "$.bucket"
    assert d["States"]["WaitForDeadline"]["TimestampPath"] == "$.deadline"


def test_writes_timed_out_when_no_result(stack, clients) -> None:
    settings, _ = stack
    key = layout.result_key("run1", "build")
    d = wait_execution(clients.sfn, start(clients, settings, "run1", key))
    assert d["status"] == "SUCCEEDED"
    assert read(clients, settings.internal_bucket, key) == {"status": "timed_out"}
    assert read(clients, settings.internal_bucket, wake_key("run1", "build")) is None  # its own event wakes


def test_never_overwrites_a_real_result_and_wakes_the_orchestrator(stack, clients) -> None:
    """A result whose notification was lost still gets noticed: the watchdog leaves a wake-up."""
    settings, _ = stack
    key = layout.result_key("run2", "build")
    clients.s3.put_object(Bucket=settings.internal_bucket, Key=key, Body=b'{"status": "succeeded"}')
    assert wait_execution(clients.sfn, start(clients, settings, "run2", key))["status"] == "SUCCEEDED"
    assert read(clients, settings.internal_bucket, key) == {"status": "succeeded"}
    assert read(clients, settings.internal_bucket, wake_key("run2", "build")) == {}


def test_result_arriving_between_check_and_write_is_kept(stack, clients) -> None:
    """The put is conditional (If-None-Match), so the race between HeadObject and PutObject is safe."""
    settings, _ = stack
    d = watchdog.definition()
    d["StartAt"] = "WriteTimedOut"  # skip straight to the write, as if the result landed just after the check
    arn = clients.sfn.create_state_machine(name=f"{settings.watchdog_arn.rsplit(':', 1)[1]}-race",
                                           definition=json.dumps(d),
                                           roleArn="arn:aws:iam::123456789012:role/x")["stateMachineArn"]
    key = layout.result_key("run3", "build")
    clients.s3.put_object(Bucket=settings.internal_bucket, Key=key, Body=b'{"status": "failed"}')
    ex = clients.sfn.start_execution(stateMachineArn=arn, input=watchdog.execution_input(
        deadline=time.time(), bucket=settings.internal_bucket, key=key, body='{"status": "timed_out"}',
        wake_key=wake_key("run3", "build")))["executionArn"]
    out = wait_execution(clients.sfn, ex)
    assert out["status"] == "SUCCEEDED" and "put_error" in json.loads(out["output"])
    assert read(clients, settings.internal_bucket, key) == {"status": "failed"}
    assert read(clients, settings.internal_bucket, wake_key("run3", "build")) == {}


def test_start_is_idempotent_even_when_retried_later(stack, clients) -> None:
    settings, _ = stack
    key = layout.result_key("run4", "o")
    deadline = time.time() + 100
    first = start(clients, settings, "run4", key, deadline=deadline)
    assert start(clients, settings, "run4", key, deadline=deadline) == first
    assert start(clients, settings, "run4", key, deadline=deadline + 5) == first  # an older attempt guards it
    clients.sfn.stop_execution(executionArn=first)


def test_execution_names_and_timestamps() -> None:
    assert watchdog.execution_name("abc", "build") == "abc-build"
    assert len(watchdog.execution_name("0123456789abcdef", "x" * 64)) <= 80
    assert watchdog.execution_name("r", "a.b") != watchdog.execution_name("r", "a-b")
    assert watchdog.timestamp(0) == "1970-01-01T00:00:00Z" and watchdog.timestamp(0.2) == "1970-01-01T00:00:01Z"
