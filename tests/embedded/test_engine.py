"""The engine end to end on the embedded AWS: real sops, real git, real worker processes,
presigned URLs over HTTP, S3 -> SQS notifications and the watchdog run by moto."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import OrderRecord
from lambda_runtime.schema.status import OrderStatus

pytestmark = pytest.mark.slow


@pytest.fixture()
def engine(aws):
    overrides = {"watchdog_grace_seconds": 3, "allowed_source_buckets": ("e*-state",)}
    stack = EmbeddedStack(aws, prefix="e" + secrets.token_hex(4), settings_overrides=overrides)
    with stack:
        yield stack
    assert not stack.pump_errors


def run_job(engine: EmbeddedStack, job: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    code, body = engine.submit({"username": "tester", **job})
    assert code == 202, body
    return engine.wait(body["run_id"], timeout=timeout)


def statuses(done: dict[str, Any]) -> dict[str, str]:
    return {n: o["status"] for n, o in done["orders"].items()}


def dispatch_counts(engine: EmbeddedStack, run_id: str) -> Counter:
    return Counter(o for r, o, _ in engine.dispatcher.dispatched if r == run_id)


def test_artifacts_secrets_and_tolerated_failure(engine, tmp_path) -> None:
    engine.clients.ssm.put_parameter(Name="/iac-ci/test/token", Value="tok-9f8e7d6c", Type="SecureString")
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "input.txt").write_text("hello\n")
    job = {
        "name": "pipeline",
        "env": {"GREETING": "hi"},
        "source": {"path": str(src)},
        "orders": [
            {
                "name": "build",
                "target": "lambda",
                "dir": "app",
                "artifacts": ["out"],
                "cmds": ["mkdir -p out", "tr a-z A-Z < input.txt > out/result.txt"],
            },
            {"name": "lint", "must_succeed": False, "cmds": ["echo lint problems", "exit 4"]},
            {
                "name": "deploy",
                "depends_on": ["build", "lint"],
                "inputs": [{"from": "build", "path": "out"}],
                "env": {"STAGE": "dev"},
                "secrets": [{"env": "TOKEN", "ssm": "/iac-ci/test/token"}],
                "cmds": ["cat out/result.txt", 'echo "$GREETING $STAGE token=$TOKEN"', 'test "$TOKEN" = tok-9f8e7d6c'],
            },
        ],
    }
    done = run_job(engine, job)
    assert done["status"] == "succeeded"
    assert statuses(done) == {"build": "succeeded", "lint": "failed", "deploy": "succeeded"}
    assert done["orders"]["lint"]["exit_code"] == 4
    tail = done["orders"]["deploy"]["log_tail"]
    assert "HELLO" in tail and "hi dev token=***" in tail and "tok-9f8e7d6c" not in tail
    log = (
        engine.clients.s3.get_object(
            Bucket=engine.settings.internal_bucket, Key=layout.log_key(done["run_id"], "deploy")
        )["Body"]
        .read()
        .decode()
    )
    assert "token=***" in log and "tok-9f8e7d6c" not in log
    events = engine.store.events(done["run_id"])
    kinds = [e["event_type"] for e in events]
    assert kinds[0] == "job_started" and kinds[-1] == "job_completed"
    assert all(isinstance(e["epoch_ms"], int) and e["expire_at"] > time.time() + 89 * 86400 for e in events)
    assert dispatch_counts(engine, done["run_id"]) == Counter({"build": 1, "lint": 1, "deploy": 1})


def test_three_level_failure_cascade(engine) -> None:
    job = {
        "name": "cascade",
        "orders": [
            {"name": "a", "cmds": ["exit 1"]},
            {"name": "b", "depends_on": ["a"], "cmds": ["true"]},
            {"name": "c", "depends_on": ["b"], "cmds": ["true"]},
            {"name": "d", "depends_on": ["c"], "cmds": ["true"]},
            {"name": "free", "cmds": ["true"]},
        ],
    }
    done = run_job(engine, job)
    assert done["status"] == "failed"
    assert statuses(done) == {"a": "failed", "b": "skipped", "c": "skipped", "d": "skipped", "free": "succeeded"}
    assert "dependency 'a'" in done["orders"]["b"]["reason"]
    assert set(dispatch_counts(engine, done["run_id"])) == {"a", "free"}


def test_a_skip_is_not_tolerated_by_an_advisory_order(engine) -> None:
    """The reported chain: deploy-test fails, advisory smoke is skipped, deploy-prd must not run."""
    job = {
        "name": "promotion",
        "orders": [
            {"name": "deploy-test", "cmds": ["exit 1"]},
            {"name": "smoke", "must_succeed": False, "depends_on": ["deploy-test"], "cmds": ["true"]},
            {"name": "deploy-prd", "depends_on": ["smoke"], "cmds": ["true"]},
        ],
    }
    done = run_job(engine, job)
    assert done["status"] == "failed"
    assert statuses(done) == {"deploy-test": "failed", "smoke": "skipped", "deploy-prd": "skipped"}
    assert "dependency 'smoke'" in done["orders"]["deploy-prd"]["reason"]
    assert set(dispatch_counts(engine, done["run_id"])) == {"deploy-test"}  # nothing below it started


def test_sigkilled_worker_is_reported_timed_out_by_the_watchdog(engine) -> None:
    job = {
        "name": "killed",
        "orders": [
            {"name": "victim", "timeout": 3, "cmds": ["sleep 60"]},
            {"name": "after", "depends_on": ["victim"], "cmds": ["true"]},
        ],
    }
    code, body = engine.submit(job)
    run_id = body["run_id"]
    deadline = time.monotonic() + 30
    while not engine.dispatcher.kill(run_id, "victim"):
        assert time.monotonic() < deadline, "worker never started"
        time.sleep(0.1)
    done = engine.wait(run_id, timeout=60)
    assert done["status"] == "timed_out"
    assert statuses(done) == {"victim": "timed_out", "after": "skipped"}
    result = json.loads(
        engine.clients.s3.get_object(Bucket=engine.settings.internal_bucket, Key=layout.result_key(run_id, "victim"))[
            "Body"
        ].read()
    )
    assert result["producer"] == "watchdog"


def test_order_timeout_kills_the_command(engine) -> None:
    done = run_job(
        engine, {"name": "slow", "orders": [{"name": "s", "timeout": 2, "target": "lambda", "cmds": ["sleep 30"]}]}
    )
    assert statuses(done) == {"s": "timed_out"} and done["status"] == "timed_out"
    assert done["orders"]["s"]["duration_s"] < 20


def test_git_source_at_an_exact_commit(engine, git_repo) -> None:
    first = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=git_repo, capture_output=True, text=True).stdout.strip()
    job = {
        "name": "git",
        "orders": [
            {
                "name": "old",
                "dir": "infra",
                "source": {"git": {"url": f"file://{git_repo}", "ref": first}},
                "cmds": ["grep -q v1 main.tf", "test ! -e ../.git"],
            },
            {
                "name": "head",
                "dir": "infra",
                "source": {"git": {"url": f"file://{git_repo}"}},
                "cmds": ["grep -q v2 main.tf"],
            },
        ],
    }
    done = run_job(engine, job)
    assert statuses(done) == {"old": "succeeded", "head": "succeeded"}, done


def test_packaging_failure_fails_the_run_with_a_clear_error(engine) -> None:
    job = {
        "name": "nosecret",
        "orders": [{"name": "a", "cmds": ["true"], "secrets": [{"env": "X", "ssm": "/iac-ci/missing"}]}],
    }
    done = run_job(engine, job)
    assert done["status"] == "failed"
    assert "/iac-ci/missing" in done["error"] and "could not be read" in done["error"]


def test_cancel_stops_running_and_queued_orders(engine) -> None:
    job = {
        "name": "cancel",
        "orders": [{"name": "long", "cmds": ["sleep 60"]}, {"name": "next", "depends_on": ["long"], "cmds": ["true"]}],
    }
    code, body = engine.submit(job)
    run_id = body["run_id"]
    while engine.dispatcher.running() == 0:
        time.sleep(0.1)
    assert engine.cancel(run_id)[0] == 202
    done = engine.wait(run_id, timeout=30)
    assert done["status"] == "cancelled"
    assert statuses(done) == {"long": "cancelled", "next": "cancelled"}
    deadline = time.monotonic() + 15
    while engine.dispatcher.running():
        assert time.monotonic() < deadline, "cancelled worker still running"
        time.sleep(0.1)
    assert engine.cancel(run_id)[0] == 409


def test_job_timeout(engine) -> None:
    """A running order times out with its job; one that never started is cancelled. The job's 8 seconds
    leave ``a`` (a CodeBuild worker: a fresh process) time to start on a loaded machine, where 2 seconds
    sometimes ended the job while ``a`` was still queued."""
    done = run_job(
        engine,
        {
            "name": "jobtimeout",
            "timeout": 8,
            "orders": [{"name": "a", "cmds": ["sleep 60"]}, {"name": "b", "depends_on": ["a"], "cmds": ["true"]}],
        },
    )
    assert done["status"] == "timed_out"
    assert statuses(done) == {"a": "timed_out", "b": "cancelled"}


def test_duplicate_and_reordered_callbacks(engine) -> None:
    """Every callback event is delivered again, in reverse order, while the run progresses."""
    sqs, url = engine.clients.sqs, engine.queues.callbacks_url
    job = {
        "name": "dupes",
        "orders": [
            {"name": f"o{i}", "cmds": ["true"], "target": "lambda", "depends_on": [f"o{i - 1}"] if i else []}
            for i in range(5)
        ],
    }
    code, body = engine.submit(job)
    run_id = body["run_id"]
    seen: set[str] = set()
    while engine.done(run_id) is None:
        listed = engine.clients.s3.list_objects_v2(
            Bucket=engine.settings.internal_bucket, Prefix=f"callbacks/{run_id}/"
        ).get("Contents", [])
        fresh = [o["Key"] for o in listed if o["Key"] not in seen]
        for key in reversed(fresh):
            seen.add(key)
            event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": key}}}]}
            for _ in range(2):
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
        time.sleep(0.05)
    done = engine.wait(run_id)
    assert done["status"] == "succeeded"
    assert dispatch_counts(engine, run_id) == Counter({f"o{i}": 1 for i in range(5)})
    completed = [e for e in engine.store.events(run_id) if e["event_type"] == "job_completed"]
    assert len(completed) == 1


def test_racing_orchestrators_never_dispatch_twice(engine) -> None:
    """Many invocations wake the same run at once, beside the queue-driven ones."""
    job = {
        "name": "race",
        "orders": [
            {
                "name": f"l{layer}-{i}",
                "target": "lambda",
                "cmds": ["true"],
                "depends_on": [f"l{layer - 1}-{j}" for j in range(4)] if layer else [],
            }
            for layer in range(3)
            for i in range(4)
        ],
    }
    code, body = engine.submit(job)
    run_id = body["run_id"]
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                engine.orchestrator.wake(run_id)
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        done = engine.wait(run_id, timeout=90)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert done["status"] == "succeeded"
    counts = dispatch_counts(engine, run_id)
    assert len(counts) == 12 and set(counts.values()) == {1}


def test_done_object_is_written_once(engine) -> None:
    done = run_job(engine, {"name": "once", "orders": [{"name": "a", "cmds": ["true"]}]})
    run_id = done["run_id"]
    before = engine.clients.s3.head_object(Bucket=engine.settings.done_bucket, Key=layout.done_key(run_id))
    for _ in range(3):  # late duplicates after the end
        assert engine.orchestrator.wake(run_id) == "evaluated"
    after = engine.clients.s3.head_object(Bucket=engine.settings.done_bucket, Key=layout.done_key(run_id))
    assert before["ETag"] == after["ETag"] and before["LastModified"] == after["LastModified"]


def test_aws_role_gives_the_order_short_lived_credentials(engine) -> None:
    role = "arn:aws:iam::123456789012:role/deployer"
    stack = EmbeddedStack(
        engine.aws,
        prefix="r" + secrets.token_hex(4),
        settings_overrides={"allowed_role_arns": ("arn:aws:iam::123456789012:role/*",)},
    )
    with stack:
        code, body = stack.submit(
            {
                "name": "role",
                "orders": [
                    {
                        "name": "a",
                        "aws_role": role,
                        "target": "lambda",
                        "cmds": [
                            "python -c \"import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])\"",
                            'test -n "$AWS_SESSION_TOKEN"',
                            'echo "key=$AWS_SECRET_ACCESS_KEY"',
                        ],
                    }
                ],
            }
        )
        assert code == 202, body
        done = stack.wait(body["run_id"], timeout=60)
    assert done["status"] == "succeeded", done
    tail = done["orders"]["a"]["log_tail"]
    assert "assumed-role/deployer/" in tail and "key=***" in tail


def test_role_outside_the_allow_list_is_refused_at_intake(engine) -> None:
    code, body = engine.submit(
        {
            "name": "role",
            "orders": [{"name": "a", "aws_role": "arn:aws:iam::999999999999:role/admin", "cmds": ["true"]}],
        }
    )
    assert code == 400 and body["problems"][0]["field"] == "aws_role"


def test_s3_source_outside_the_allowed_buckets_is_refused(engine) -> None:
    code, body = engine.submit(
        {
            "name": "zip",
            "orders": [
                {"name": "a", "source": {"s3": f"s3://{engine.settings.internal_bucket}/jobs/x.zip"}, "cmds": ["true"]}
            ],
        }
    )
    assert code == 400 and body["problems"][0]["field"] == "source.s3"


def test_s3_zip_source(engine, tmp_path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mod/main.tf", "resource {}\n")
    engine.clients.s3.put_object(Bucket=engine.settings.state_bucket, Key="src/code.zip", Body=buf.getvalue())
    done = run_job(
        engine,
        {
            "name": "zip",
            "orders": [
                {
                    "name": "a",
                    "dir": "mod",
                    "source": {"s3": f"s3://{engine.settings.state_bucket}/src/code.zip"},
                    "cmds": ["grep -q resource main.tf"],
                }
            ],
        },
    )
    assert done["status"] == "succeeded", done


def test_a_late_duplicate_packaging_cannot_reset_a_started_order(engine) -> None:
    """Two deliveries of the same job: the one that finishes second must not re-queue anything."""
    code, body = engine.submit({"name": "dup", "orders": [{"name": "apply", "cmds": ["sleep 3"]}]})
    run_id = body["run_id"]
    deadline = time.monotonic() + 30
    while engine.dispatcher.running() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    queued_again = OrderRecord(name="apply", status=OrderStatus.QUEUED, target="codebuild", timeout=600)
    assert engine.store.put_orders(run_id, [queued_again]) is False  # refused: the run is running
    assert engine.store.load(run_id).orders["apply"].status == "running"
    assert engine.packager.package(run_id) == "already-packaged"
    done = engine.wait(run_id)
    assert done["status"] == "succeeded"
    assert dispatch_counts(engine, run_id) == Counter({"apply": 1})


def test_lambda_invokes_are_never_retried_by_the_sdk(engine) -> None:
    retries = engine.clients.lambda_.meta.config.retries
    assert retries.get("total_max_attempts") == 1


class _RefusingDispatcher:
    """Stands in for the Lambda service answering an invoke with an error."""

    def __init__(self, status: int):
        self.status = status

    def dispatch(self, target, payload):
        from botocore.exceptions import ClientError

        raise ClientError(
            {"Error": {"Code": "Boom", "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": self.status}}, "Invoke"
        )

    def stop(self, target, ref):
        return None


@pytest.mark.parametrize("status,reported", [(400, True), (503, False)])
def test_dispatch_errors_report_only_definite_refusals(engine, status, reported) -> None:
    engine.orchestrator.dispatcher = _RefusingDispatcher(status)
    code, body = engine.submit({"name": "refused", "orders": [{"name": "a", "target": "lambda", "cmds": ["true"]}]})
    run_id = body["run_id"]
    deadline = time.monotonic() + 30
    while (a := engine.store.load(run_id).orders.get("a")) is None or a.status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    objects = engine.clients.s3.list_objects_v2(
        Bucket=engine.settings.internal_bucket, Prefix=layout.result_key(run_id, "a")
    ).get("KeyCount", 0)
    assert bool(objects) is reported  # a 5xx may hide a started worker: the watchdog decides
    if reported:
        done = engine.wait(run_id)
        assert done["orders"]["a"]["status"] == "failed" and "dispatch failed" in done["orders"]["a"]["reason"]
    engine.cancel(run_id)
