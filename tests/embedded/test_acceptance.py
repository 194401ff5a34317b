"""Run acceptance (``store.acceptance``) against moto: the run item, the job object, the watchdog,
and idempotency by key (a repeat answers the first run, another body is refused, a repeat while
the first is being accepted is told to retry)."""

from __future__ import annotations

import json
import threading

import pytest

from lambda_runtime import watchdog
from lambda_runtime.job.validate import parse_job
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import RunRecord
from lambda_runtime.schema.status import RunStatus
from lambda_runtime.store.acceptance import Acceptance, AcceptInProgress, KeyReused, body_hash

NOW = 1_900_000_000.0
SHA = "a" * 40
JOB = {
    "name": "deploy",
    "username": "alice",
    "repo": "acme/infra",
    "pr_number": 7,
    "commit": SHA,
    "timeout": 900,
    "orders": [{"name": "plan", "cmds": ["true"]}, {"name": "apply", "cmds": ["true"], "depends_on": ["plan"]}],
}


def job_doc(**changes: object) -> dict:
    return parse_job({**JOB, **changes}).model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.fixture()
def acceptance(stack, clients) -> Acceptance:
    settings, _ = stack
    return Acceptance(settings, clients, clock=lambda: NOW)


def run_items(acceptance: Acceptance) -> list[dict]:
    items = acceptance.clients.dynamodb.scan(TableName=acceptance.settings.orders_table, ConsistentRead=True)["Items"]
    return [i for i in items if i["sk"]["S"] == "#run"]


def job_objects(acceptance: Acceptance) -> list[str]:
    listed = acceptance.clients.s3.list_objects_v2(Bucket=acceptance.settings.internal_bucket, Prefix="jobs/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_accepting_stores_the_run_record_the_job_object_and_arms_the_job_timeout(acceptance) -> None:
    doc = job_doc()
    ack = acceptance.accept(doc, body_sha256=body_hash(b"raw body"), idempotency_key="deploy-1",
                            run_fields={"vcs": "github", "installation_id": 42})
    run_id = ack["run_id"]
    settings = acceptance.settings
    assert ack == {"run_id": run_id, "trace_id": f"{run_id}:{int(NOW)}", "flow_id": f"alice:{run_id}-deploy",
                   "status": "accepted", "orders": 2, "done": f"s3://{settings.done_bucket}/{run_id}/done"}

    assert acceptance.store.get_run(run_id) == RunRecord(
        run_id=run_id, status=RunStatus.ACCEPTED, trace_id=ack["trace_id"], flow_id=ack["flow_id"], name="deploy",
        username="alice", repo="acme/infra", pr_number=7, commit=SHA, vcs="github", installation_id=42,
        timeout=900, deadline=NOW + 900, created_at=NOW, order_total=2, idempotency_key="deploy-1")

    stored = acceptance.clients.s3.get_object(Bucket=settings.internal_bucket, Key=layout.job_key(run_id))
    assert json.loads(stored["Body"].read()) == doc

    execution = acceptance.clients.sfn.describe_execution(
        executionArn=watchdog.execution_arn(settings.watchdog_arn, watchdog.execution_name(run_id, "job")))
    armed = json.loads(execution["input"])
    assert armed["deadline"] == watchdog.timestamp(NOW + 900)
    assert armed["key"] == layout.control_key(run_id, layout.SIGNAL_JOB_TIMEOUT)


def test_a_repeat_with_the_same_key_and_body_answers_the_first_run_without_a_second(acceptance) -> None:
    first = acceptance.accept(job_doc(), body_sha256=body_hash(b"one"), idempotency_key="deploy-2")
    again = acceptance.accept(job_doc(), body_sha256=body_hash(b"one"), idempotency_key="deploy-2")
    assert again == first
    assert [i["run_id"]["S"] for i in run_items(acceptance)] == [first["run_id"]]
    assert job_objects(acceptance) == [layout.job_key(first["run_id"])]


def test_idempotency_records_keep_the_key_prefix_of_earlier_versions(acceptance, monkeypatch) -> None:
    """A record written before acceptance moved (prefix: the Lambda function's name and the old
    function path) still answers its repeats after an upgrade."""
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    fresh = Acceptance(acceptance.settings, acceptance.clients, clock=lambda: NOW)
    fresh.accept(job_doc(), body_sha256=body_hash(b"one"), idempotency_key="deploy-5")
    ids = [i["id"]["S"] for i in acceptance.clients.dynamodb.scan(TableName=acceptance.settings.idempotency_table,
                                                                  ConsistentRead=True)["Items"]]
    assert len(ids) == 1 and ids[0].startswith("test-func.lambda_runtime.intake.logic.Intake._accept#"), ids


def test_another_body_with_a_used_key_is_refused_and_changes_nothing(acceptance) -> None:
    first = acceptance.accept(job_doc(), body_sha256=body_hash(b"one"), idempotency_key="deploy-3")
    with pytest.raises(KeyReused):
        acceptance.accept(job_doc(name="other"), body_sha256=body_hash(b"two"), idempotency_key="deploy-3")
    assert [i["run_id"]["S"] for i in run_items(acceptance)] == [first["run_id"]]
    assert job_objects(acceptance) == [layout.job_key(first["run_id"])]


def test_without_a_key_every_accept_is_a_new_run(acceptance) -> None:
    a = acceptance.accept(job_doc(), body_sha256=body_hash(b"one"))
    b = acceptance.accept(job_doc(), body_sha256=body_hash(b"one"))
    assert a["run_id"] != b["run_id"]
    assert sorted(i["run_id"]["S"] for i in run_items(acceptance)) == sorted([a["run_id"], b["run_id"]])
    assert acceptance.store.get_run(a["run_id"]).idempotency_key is None


def test_an_engine_job_is_accepted_once_per_key_and_keyed_by_its_content(acceptance) -> None:
    """The GitHub path: no submitted body, so the job's canonical JSON is what a repeat must match."""
    job = parse_job(JOB)
    fields = {"vcs": "github", "installation_id": 9}
    first = acceptance.accept_job(job, idempotency_key="github-d1", run_fields=fields)
    assert acceptance.accept_job(parse_job(JOB), idempotency_key="github-d1", run_fields=fields) == first
    with pytest.raises(KeyReused):
        acceptance.accept_job(parse_job({**JOB, "timeout": 60}), idempotency_key="github-d1", run_fields=fields)
    run = acceptance.store.get_run(first["run_id"])
    assert (run.vcs, run.installation_id, run.idempotency_key) == ("github", 9, "github-d1")
    assert len(run_items(acceptance)) == 1


def test_a_repeat_while_the_first_is_being_accepted_is_told_to_retry(stack, clients) -> None:
    settings, _ = stack
    inside, release = threading.Event(), threading.Event()

    def clock() -> float:  # the first acceptance stops inside, after its in-progress record exists
        if threading.current_thread().name == "first" and not inside.is_set():
            inside.set()
            assert release.wait(30)
        return NOW

    acceptance = Acceptance(settings, clients, clock=clock)
    answers: list[object] = []
    first = threading.Thread(name="first", target=lambda: answers.append(
        acceptance.accept(job_doc(), body_sha256=body_hash(b"one"), idempotency_key="deploy-4")))
    first.start()
    try:
        assert inside.wait(30)
        with pytest.raises(AcceptInProgress):
            acceptance.accept(job_doc(), body_sha256=body_hash(b"one"), idempotency_key="deploy-4")
        assert run_items(acceptance) == []  # nothing of the second was written
    finally:
        release.set()
        first.join(30)
    assert len(answers) == 1 and [i["run_id"]["S"] for i in run_items(acceptance)] == [answers[0]["run_id"]]
