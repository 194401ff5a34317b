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


def test_definition_keeps_input_between_states() -> None:
    d = watchdog.definition()
    for name, state in d["States"].items():
        if state["Type"] == "Task":
            assert "ResultPath" in state, f"{name} would replace its input with the task result"
            assert state["Parameters"]["Bucket.$"] == "$.bucket"


def test_writes_timed_out_when_no_result(stack, clients) -> None:
    settings, _ = stack
    key = layout.result_key("run1", "build")
    arn = watchdog.start(
        clients.sfn,
        settings.watchdog_arn,
        run_id="run1",
        subject="build",
        wait_seconds=1,
        bucket=settings.internal_bucket,
        key=key,
        body='{"status": "timed_out"}',
    )
    d = wait_execution(clients.sfn, arn)
    assert d["status"] == "SUCCEEDED"
    body = clients.s3.get_object(Bucket=settings.internal_bucket, Key=key)["Body"].read()
    assert json.loads(body) == {"status": "timed_out"}


def test_never_overwrites_a_real_result(stack, clients) -> None:
    settings, _ = stack
    key = layout.result_key("run2", "build")
    clients.s3.put_object(Bucket=settings.internal_bucket, Key=key, Body=b'{"status": "succeeded"}')
    arn = watchdog.start(
        clients.sfn,
        settings.watchdog_arn,
        run_id="run2",
        subject="build",
        wait_seconds=1,
        bucket=settings.internal_bucket,
        key=key,
        body='{"status": "timed_out"}',
    )
    assert wait_execution(clients.sfn, arn)["status"] == "SUCCEEDED"
    body = clients.s3.get_object(Bucket=settings.internal_bucket, Key=key)["Body"].read()
    assert json.loads(body) == {"status": "succeeded"}


def test_result_arriving_between_check_and_write_is_kept(stack, clients) -> None:
    """The put is conditional (If-None-Match), so the race between HeadObject and PutObject is safe."""
    settings, _ = stack
    d = watchdog.definition()
    d["StartAt"] = "WriteTimedOut"  # skip straight to the write, as if the result landed just after the check
    arn = clients.sfn.create_state_machine(
        name=f"{settings.watchdog_arn.rsplit(':', 1)[1]}-race",
        definition=json.dumps(d),
        roleArn="arn:aws:iam::123456789012:role/x",
    )["stateMachineArn"]
    key = layout.result_key("run3", "build")
    clients.s3.put_object(Bucket=settings.internal_bucket, Key=key, Body=b'{"status": "failed"}')
    ex = clients.sfn.start_execution(
        stateMachineArn=arn,
        input=watchdog.execution_input(
            wait_seconds=0, bucket=settings.internal_bucket, key=key, body='{"status": "timed_out"}'
        ),
    )["executionArn"]
    out = wait_execution(clients.sfn, ex)
    assert out["status"] == "SUCCEEDED" and "put_error" in json.loads(out["output"])
    assert json.loads(clients.s3.get_object(Bucket=settings.internal_bucket, Key=key)["Body"].read()) == {
        "status": "failed"
    }


def test_start_is_idempotent(stack, clients) -> None:
    settings, _ = stack
    kwargs = dict(
        run_id="run4",
        subject="o",
        wait_seconds=100,
        bucket=settings.internal_bucket,
        key=layout.result_key("run4", "o"),
        body="{}",
    )
    first = watchdog.start(clients.sfn, settings.watchdog_arn, **kwargs)
    assert watchdog.start(clients.sfn, settings.watchdog_arn, **kwargs) == first
    clients.sfn.stop_execution(executionArn=first)


def test_execution_names_are_valid() -> None:
    assert watchdog.execution_name("abc", "build") == "abc-build"
    long = watchdog.execution_name("0123456789abcdef", "x" * 64)
    assert len(long) <= 80
    assert watchdog.execution_name("r", "a.b") != watchdog.execution_name("r", "a-b")
