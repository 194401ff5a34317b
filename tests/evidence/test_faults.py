"""Fault injection against the whole engine on the embedded AWS (issue 5, "Evidence").

Every scenario runs real jobs through EmbeddedStack (real sops, worker processes, S3 -> SQS
notifications, the watchdog executed by moto) while something goes wrong at a boundary:
notifications duplicated, late and reordered; 50 wake-ups at once; the orchestrator crashing
at each of its side-effect points; throttling and 5xx on the AWS APIs through botocore's own
retries; workers killed, never started, or unable to report; a lock holder dying with its lease;
writes applied by AWS whose answers are lost, so that botocore sends them again.

After each scenario ``faults.invariants.check_run`` asserts the same four properties: the run
is terminal, no order ran twice, no callback was lost, the done object was written once.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.faults.aws_faults import AwsFaults, LostResponses
from support.faults.chaos import ChaosDelivery, CrashAt, SelectiveDispatcher, s3_event
from support.faults.invariants import chain, check_run, counted_job, diamond, enable_versioning
from support.paths import GITHUB_FIXTURES

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.intake import signature
from lambda_runtime.orchestrator.engine import RetryLater
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import OrderResult
from lambda_runtime.schema.status import OrderStatus

pytestmark = [pytest.mark.faults, pytest.mark.slow]

GRACE = 2
# An order that must really run gets a timeout with room for its worker's start-up and reporting margin;
# one that is meant to be lost before it runs gets 1 s, so its watchdog speaks 1 + GRACE s after dispatch.
RUNS_TIMEOUT = 6
LOST_TIMEOUT = 1


@pytest.fixture()
def make_stack(aws) -> Iterator[Callable[..., EmbeddedStack]]:
    """EmbeddedStack factory: unique prefix, short grace, versioned buckets; closed after the test."""
    made: list[EmbeddedStack] = []

    def make(*, checkpoint: Callable[[str], None] | None = None, **overrides: Any) -> EmbeddedStack:
        stack = EmbeddedStack(
            aws,
            prefix="f" + secrets.token_hex(4),
            settings_overrides={"watchdog_grace_seconds": GRACE, "lock_lease_seconds": 10, **overrides},
            checkpoint=checkpoint,
        )
        enable_versioning(stack)
        made.append(stack)
        return stack.start()

    yield make
    for stack in made:
        stack.close()


@pytest.fixture()
def exec_log(tmp_path: Path) -> Path:
    return tmp_path / "executions.log"


def submit(stack: EmbeddedStack, job: dict[str, Any]) -> str:
    code, body = stack.submit(job)
    assert code == 202, body
    return str(body["run_id"])


def all_succeeded(evidence: Any) -> None:
    assert evidence.done["status"] == "succeeded", evidence.done
    assert set(evidence.statuses.values()) == {"succeeded"}, evidence.statuses
    assert all(c == 1 for c in evidence.executions.values()) and set(evidence.executions) == set(evidence.statuses)


# ---- delivery ---------------------------------------------------------------------------------


def test_every_callback_delivered_twice_late_and_out_of_order(make_stack, exec_log) -> None:
    stack = make_stack()
    chaos = ChaosDelivery(stack, seed=42, copies=2, max_delay=3, hold_back=0.5)
    run_id = submit(stack, counted_job("chaos", diamond(), exec_log))
    evidence = check_run(stack, run_id, exec_log)
    all_succeeded(evidence)
    assert chaos.originals >= 7 and chaos.copies_sent >= 2 * chaos.originals and chaos.held_back > 0
    keys = [k for k in chaos.delivered if run_id in k]
    assert keys and all(chaos.delivered[k] >= 2 for k in keys), chaos.delivered


def test_a_lost_result_notification_is_recovered_by_the_watchdog(make_stack, exec_log) -> None:
    """The result object lands but its S3 event never reaches the orchestrator."""
    stack = make_stack()
    chaos = ChaosDelivery(stack, copies=0, hold_back=0.0, drop=lambda key: key.endswith("/orders/only/result.json"))
    run_id = submit(stack, counted_job("lostnote", [{"name": "only", "target": "lambda", "timeout": RUNS_TIMEOUT,
                                                    "cmds": ["true"]}], exec_log))
    evidence = check_run(stack, run_id, exec_log)
    all_succeeded(evidence)  # the worker's own result, found when the watchdog wakes the run
    assert evidence.results["only"]["producer"] == "worker"
    assert chaos.dropped and set(chaos.dropped) == {layout.result_key(run_id, "only")}


STORMS = 4


def test_fifty_simultaneous_callbacks_for_one_run(make_stack, exec_log) -> None:
    """Each time one of the run's first callback objects appears: 50 threads wake the run at the same
    instant, and 50 duplicate notifications are queued."""
    stack = make_stack()
    run_id = submit(stack, counted_job("fifty", diamond(width=3), exec_log))
    sqs = AwsClients(region=stack.aws.region).sqs
    s3 = AwsClients(region=stack.aws.region).s3
    outcomes: Counter = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def storm(key: str) -> None:
        barrier = threading.Barrier(50)

        def one() -> None:
            barrier.wait()
            try:
                outcome = stack.orchestrator.wake(run_id)
            except RetryLater:  # 'let the queue deliver the message again': legitimate for a consumer
                outcome = "retry-later"
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                with lock:
                    errors.append(exc)
                return
            with lock:
                outcomes[outcome] += 1

        threads = [threading.Thread(target=one) for _ in range(50)]
        for t in threads:
            t.start()
        for i in range(0, 50, 10):
            sqs.send_message_batch(QueueUrl=stack.queues.callbacks_url, Entries=[
                {"Id": str(j), "MessageBody": s3_event(key, marker=i + j)} for j in range(10)])
        for t in threads:
            t.join()

    seen: set[str] = set()
    storms = 0
    deadline = time.monotonic() + 90
    while stack.done(run_id) is None and time.monotonic() < deadline:
        listed = s3.list_objects_v2(Bucket=stack.settings.internal_bucket,
                                    Prefix=f"{layout.CALLBACKS_PREFIX}{run_id}/").get("Contents", [])
        for obj in listed:
            if obj["Key"] not in seen and storms < STORMS:
                seen.add(obj["Key"])
                storm(obj["Key"])
                storms += 1
        time.sleep(0.05)
    assert not errors, errors
    # every wake-up either evaluated the run or left its mark for the live holder (who may be the queue's consumer)
    assert storms == STORMS and sum(outcomes.values()) == 50 * storms, (storms, outcomes)
    assert set(outcomes) <= {"evaluated", "deferred", "retry-later", "lease-lost"} and outcomes["deferred"], outcomes
    all_succeeded(check_run(stack, run_id, exec_log))


# ---- orchestrator crashes -----------------------------------------------------------------------


def crash_job(timeout: int = 600) -> list[dict[str, Any]]:
    return [
        {"name": "first", "target": "lambda", "timeout": timeout, "cmds": ["true"]},
        {"name": "second", "target": "codebuild", "timeout": timeout, "depends_on": ["first"], "cmds": ["true"]},
        {"name": "third", "target": "lambda", "timeout": timeout, "depends_on": ["second"], "cmds": ["true"]},
    ]


CRASHES = [
    # (point, nth reach, times in a row, expected order statuses: None = all succeeded)
    ("locked", 1, 1, None),  # right after taking the lease: the lease must be released for the retry
    ("locked", 2, 3, None),
    ("state_written", 2, 1, None),  # the 2nd reach: just after the first result was ingested
    ("dispatched", 1, 1, None),  # the worker started, its watchdog not yet (repaired on the retry)
    ("dispatched", 2, 2, None),  # twice in a row, for the second order
    ("finalized", 1, 1, None),  # done object and flag written; the retry finds the run final
    # the 1st 'state_written' is right after 'first' moved to running, before its dispatch: at most
    # once means it is never started; its watchdog reports it timed out and the rest is skipped
    ("state_written", 1, 1, {"first": "timed_out", "second": "skipped", "third": "skipped"}),
]


@pytest.mark.parametrize(("point", "nth", "times", "expected"), CRASHES,
                         ids=[f"{p}-reach{n}-x{t}" for p, n, t, _ in CRASHES])
def test_orchestrator_crash_at_each_side_effect_point(make_stack, exec_log, point, nth, times, expected) -> None:
    crash = CrashAt(point, nth=nth, times=times)
    stack = make_stack(checkpoint=crash)
    run_id = submit(stack, counted_job("crash", crash_job(600 if expected is None else LOST_TIMEOUT), exec_log))
    evidence = check_run(stack, run_id, exec_log)
    assert crash.crashed[point] == times, (crash.reached, crash.crashed)
    if expected is None:
        all_succeeded(evidence)
    else:
        assert evidence.statuses == expected
        assert evidence.results["first"]["producer"] == "watchdog" and not evidence.executions


def test_orchestrator_crashing_at_random_points(make_stack, exec_log) -> None:
    # (the n-th reach of any point gets the n-th draw: with this seed the 3rd reach crashes)
    crash = CrashAt(["locked", "state_written", "dispatched", "finalized"], fraction=0.35, seed=2024, max_crashes=8)
    stack = make_stack(checkpoint=crash)
    run_id = submit(stack, counted_job("randcrash", [{**o, "timeout": RUNS_TIMEOUT} for o in diamond()], exec_log))
    # the run is done under chaos; the late wake-ups that check_run makes directly (not through the
    # queue, which would retry them) must not draw a crash of their own
    stack.wait(run_id, timeout=90)
    crash.disarm()
    evidence = check_run(stack, run_id, exec_log)
    assert sum(crash.crashed.values()) >= 1, (crash.reached, crash.crashed)
    # an order is either run once and reported by its worker, or (moved to running and never
    # dispatched because of a crash) reported by its watchdog without ever running
    for name, status in evidence.statuses.items():
        if status == "succeeded":
            assert evidence.results[name]["producer"] == "worker"
        elif status == "timed_out":
            assert evidence.results[name]["producer"] == "watchdog" and evidence.executions[name] == 0
        else:
            assert status == "skipped"


# ---- throttling and 5xx through botocore's retries ------------------------------------------------


def test_throttling_and_5xx_on_the_first_calls_of_every_operation(make_stack, exec_log) -> None:
    stack = make_stack()
    faults = AwsFaults(first_n=1).install(stack.clients)
    try:
        run_id = submit(stack, counted_job("throttled", diamond(), exec_log))
        evidence = check_run(stack, run_id, exec_log)
    finally:
        faults.uninstall()
    all_succeeded(evidence)
    services = faults.by_service()
    assert {"dynamodb", "s3", "sqs", "stepfunctions"} <= set(services), services
    codes = {code for (_s, _o, code) in faults.injected}
    assert {"ThrottlingException", "ProvisionedThroughputExceededException", "SlowDown",
            "InternalServerError"} <= codes, codes
    ops = {op for (s, op, _c) in faults.injected if s == "dynamodb"}
    assert {"TransactWriteItems", "UpdateItem", "Query"} <= ops, ops


def test_throttling_and_5xx_on_a_random_fifth_of_all_calls(make_stack, exec_log) -> None:
    stack = make_stack()
    faults = AwsFaults(fraction=0.2, seed=5150).install(stack.clients)
    try:
        run_id = submit(stack, counted_job("throttled", chain(3) + [
            {"name": "side", "target": "codebuild", "cmds": ["true"]}], exec_log))
        evidence = check_run(stack, run_id, exec_log)
    finally:
        faults.uninstall()
    all_succeeded(evidence)
    assert faults.total >= 10, faults.injected
    calls = sum(faults.calls.values())
    assert 0.1 < faults.total / calls < 0.3, (faults.total, calls)


# ---- workers -----------------------------------------------------------------------------------


def victim_job(exec_log: Path, victim_cmds: list[str], name: str, timeout: int) -> dict[str, Any]:
    return counted_job(name, [
        {"name": "victim", "target": "codebuild", "timeout": timeout, "cmds": victim_cmds},
        {"name": "after", "target": "lambda", "depends_on": ["victim"], "cmds": ["true"]},
        {"name": "free", "target": "lambda", "cmds": ["true"]},
    ], exec_log)


LOST_VICTIM = {"victim": "timed_out", "after": "skipped", "free": "succeeded"}


def test_sigkilled_worker(make_stack, exec_log) -> None:
    stack = make_stack()
    run_id = submit(stack, victim_job(exec_log, ["sleep 60"], "sigkill", 4))
    deadline = time.monotonic() + 30
    while not stack.dispatcher.kill(run_id, "victim"):
        assert time.monotonic() < deadline, "worker never started"
        time.sleep(0.05)
    evidence = check_run(stack, run_id, exec_log)
    assert evidence.statuses == LOST_VICTIM and evidence.done["status"] == "timed_out"
    assert evidence.results["victim"]["producer"] == "watchdog"


def test_worker_that_never_starts(make_stack, exec_log) -> None:
    stack = make_stack()
    wrapper = SelectiveDispatcher(stack.dispatcher, lose={"victim"})
    stack.orchestrator.dispatcher = wrapper
    run_id = submit(stack, victim_job(exec_log, ["true"], "neverstarts", LOST_TIMEOUT))
    evidence = check_run(stack, run_id, exec_log, extra_dispatches=Counter(o for _r, o in wrapper.lost))
    assert wrapper.lost == [(run_id, "victim")]
    assert evidence.statuses == LOST_VICTIM and evidence.executions["victim"] == 0
    assert evidence.results["victim"]["producer"] == "watchdog"


def test_result_upload_that_never_arrives(make_stack, exec_log) -> None:
    """The worker runs the commands; every attempt to PUT its result is refused (closed port)."""
    stack = make_stack()
    wrapper = SelectiveDispatcher(stack.dispatcher, drop_result={"victim"})
    stack.orchestrator.dispatcher = wrapper
    run_id = submit(stack, victim_job(exec_log, ["true"], "noresult", RUNS_TIMEOUT))
    evidence = check_run(stack, run_id, exec_log)
    assert wrapper.rerouted == [(run_id, "victim")]
    assert evidence.statuses == LOST_VICTIM and evidence.executions["victim"] == 1
    assert evidence.results["victim"]["producer"] == "watchdog"


# ---- the lock holder dies ----------------------------------------------------------------------


def test_lock_holder_dies_with_the_lease_held(make_stack, exec_log) -> None:
    """A holder dies right after taking the run's lease (the process is gone: nothing releases it);
    wake-ups meanwhile are deferred to it. Its own message comes back once the queue's visibility
    timeout has passed (longer than the lease, as the construct configures it: 6 x 120 s > 120 s),
    finds the lease expired and carries the run to the end."""
    lease = 5
    stack = make_stack(lock_lease_seconds=lease)
    run_id = submit(stack, counted_job("deadholder", chain(3), exec_log))
    deadline = time.monotonic() + 30
    while stack.orchestrator.locks.acquire(run_id, "dead") is None:  # and never released
        assert time.monotonic() < deadline
        time.sleep(0.01)
    taken = time.monotonic()
    # the dead holder's message reappears after its visibility timeout (> lease)
    AwsClients(region=stack.aws.region).sqs.send_message(
        QueueUrl=stack.queues.callbacks_url, DelaySeconds=lease + 1,
        MessageBody=s3_event(layout.control_key(run_id, layout.SIGNAL_PACKAGED)))
    evidence = check_run(stack, run_id, exec_log, timeout=60)
    all_succeeded(evidence)
    assert time.monotonic() - taken >= lease
    lock = stack.orchestrator.locks.read(run_id)
    assert lock is not None and lock.get("owner") != "dead"


def test_a_short_order_runs_with_a_small_watchdog_grace(make_stack, exec_log) -> None:
    """Regression (found by this suite): with watchdog_grace_seconds below the worker's fixed 5 s reporting
    margin, a 3 s order never ran its commands and was reported timed_out ('no time left to start')."""
    stack = make_stack()
    run_id = submit(stack, counted_job("short", [{"name": "quick", "target": "lambda", "timeout": 3,
                                                  "cmds": ["true"]}], exec_log))
    evidence = check_run(stack, run_id, exec_log, timeout=30)
    assert evidence.statuses == {"quick": "succeeded"}, evidence.done["orders"]["quick"]["log_tail"]


# ---- answers lost after the write was applied -------------------------------------------------------


def test_lost_answers_to_writes_that_are_safe_to_repeat(make_stack, exec_log) -> None:
    """Applied, answer lost, retried by botocore: the done object (If-None-Match: the retry's 412 means
    'already there'), watchdog starts (same name: the same execution), order field updates (plain SET)."""
    stack = make_stack()
    lost = [
        LostResponses("s3", "PutObject", lambda body: b'"order_layers"' in body, times=1),  # the done object
        LostResponses("stepfunctions", "StartExecution", lambda body: True, times=3),
        LostResponses("dynamodb", "UpdateItem", lambda body: b'"watchdog"' in body, times=2),
    ]
    for fault in lost:
        fault.install(stack.clients)
    run_id = submit(stack, counted_job("lostsafe", chain(3), exec_log))
    all_succeeded(check_run(stack, run_id, exec_log))
    assert [len(f.lost) for f in lost] == [1, 3, 2], [f.lost for f in lost]


def test_a_lost_answer_to_the_lease_acquisition(make_stack, exec_log) -> None:
    lease = 5
    stack = make_stack(lock_lease_seconds=lease)
    lost = LostResponses("dynamodb", "UpdateItem", lambda body: b"ADD epoch" in body, times=1).install(stack.clients)
    run_id = submit(stack, counted_job("lostlease", chain(2), exec_log))
    stack.wait(run_id, timeout=lease + 8)  # the retried acquisition recognises its own applied write
    assert lost.lost == [200]
    all_succeeded(check_run(stack, run_id, exec_log))


def test_a_lost_answer_to_the_github_delivery_record(make_stack, aws) -> None:
    secret_id = "faults/github-" + secrets.token_hex(4)
    AwsClients(region=aws.region).secrets.create_secret(Name=secret_id, SecretString="hook-key")
    stack = make_stack(github_webhook_secret_id=secret_id)
    lost = LostResponses("dynamodb", "TransactWriteItems", lambda body: b"github-delivery#" in body, times=1).install(
        stack.clients)
    doc = json.loads((GITHUB_FIXTURES / "pull_request_opened.json").read_text())
    doc["pull_request"]["head"]["sha"] = "3f786850e387550fdab836ed7e6dc881de23001b"
    body, delivery = json.dumps(doc).encode(), str(uuid.uuid4())
    code, answer = stack.request("POST", "/webhooks/github", body, {
        "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature.sign("hook-key", body)})
    assert lost.lost == [200]
    assert code == 202, answer
    stack.clients.s3.head_object(Bucket=stack.settings.internal_bucket, Key=layout.webhook_key("github", delivery))


# ---- everything at once ------------------------------------------------------------------------


def test_everything_at_once(make_stack, exec_log) -> None:
    crash = CrashAt(["locked", "dispatched", "finalized"], nth=1, times=2)
    stack = make_stack(checkpoint=crash)
    chaos = ChaosDelivery(stack, seed=7, copies=2, max_delay=2, hold_back=0.3)
    faults = AwsFaults(fraction=0.05, seed=99).install(stack.clients)
    try:
        run_id = submit(stack, counted_job("storm", diamond(width=4), exec_log))
        evidence = check_run(stack, run_id, exec_log)
    finally:
        faults.uninstall()
    all_succeeded(evidence)
    assert faults.total > 0 and chaos.copies_sent > 0 and crash.crashed == Counter(locked=2, dispatched=2, finalized=1)



def test_a_forged_success_for_a_failed_build_is_refused(make_stack) -> None:
    """An attacker who got hold of a CodeBuild order's result URL (or replays an old result) writes
    "succeeded" for a build that failed: the orchestrator checks the build's own status and fails
    the order, and nothing below it runs."""
    stack = make_stack()
    wrapper = SelectiveDispatcher(stack.dispatcher, drop_result={"deploy"})  # the real report never lands
    stack.orchestrator.dispatcher = wrapper
    run_id = submit(stack, {"name": "forged", "username": "tester", "orders": [
        {"name": "deploy", "target": "codebuild", "timeout": 120, "cmds": ["echo applying", "exit 3"]},
        {"name": "after", "target": "lambda", "depends_on": ["deploy"], "cmds": ["true"]},
    ]})
    deadline = time.monotonic() + 90
    while not getattr(stack.store.load(run_id).orders.get("deploy"), "dispatch_ref", None):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ref = str(stack.store.load(run_id).orders["deploy"].dispatch_ref)
    while stack.dispatcher.outcome("codebuild", ref) == "IN_PROGRESS":  # the build ended (it failed)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    forged = OrderResult(run_id=run_id, order="deploy", attempt=1, status=OrderStatus.SUCCEEDED, exit_code=0,
                         producer="worker", log_tail="all good")
    stack.clients.s3.put_object(Bucket=stack.settings.internal_bucket, Key=layout.result_key(run_id, "deploy"),
                                Body=forged.model_dump_json().encode(), IfNoneMatch="*")
    done = stack.wait(run_id, timeout=60)
    assert done["status"] == "failed"
    assert {n: o["status"] for n, o in done["orders"].items()} == {"deploy": "failed", "after": "skipped"}
    assert f"result refused: it says succeeded, but build {ref} ended FAILED" in done["orders"]["deploy"]["reason"]
