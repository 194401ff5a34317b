"""S3 notifications through SQS: URL-encoded keys, the test event, per-subject partial failures."""

from __future__ import annotations

import json
from typing import Any

from lambda_runtime.aws.s3_events import keys_by_message, process_by_subject


def sqs_event(*bodies: dict[str, Any] | str) -> dict[str, Any]:
    return {"Records": [{"messageId": f"m{i}", "body": b if isinstance(b, str) else json.dumps(b)}
                        for i, b in enumerate(bodies)]}


def s3_body(*keys: str, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    return {"Records": [{"eventName": event_name, "s3": {"object": {"key": k}}} for k in keys]}


def test_keys_per_message_skip_the_test_event_deletions_and_garbage() -> None:
    event = sqs_event(
        s3_body("callbacks/r1/a/result.json", "callbacks/r1/b/result.json"),
        {"Service": "Amazon S3", "Event": "s3:TestEvent"},
        s3_body("callbacks/r1/c/result.json", event_name="ObjectRemoved:Delete"),
        "not json",
    )
    assert keys_by_message(event) == {
        "m0": ["callbacks/r1/a/result.json", "callbacks/r1/b/result.json"], "m1": [], "m2": [], "m3": []}


def test_one_call_per_subject_and_only_the_failed_subjects_messages_come_back() -> None:
    event = sqs_event(s3_body("r1/x", "r2/x"), s3_body("r1/y"), s3_body("r3/x"), s3_body("ignored"))
    calls: list[str] = []

    def work(subject: str) -> str:
        calls.append(subject)
        if subject == "r2":
            raise RuntimeError("boom")
        return "ok"

    answer = process_by_subject(event, lambda key: key.split("/")[0] if "/" in key else None, work)
    assert calls == ["r1", "r2", "r3"]  # r1's two messages: one evaluation
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}


def test_a_key_arrives_url_encoded_and_is_left_to_the_subject_parser() -> None:
    seen: list[str] = []
    process_by_subject(sqs_event(s3_body("webhooks/github/a%2Bb.json")), lambda k: seen.append(k) or None,
                       lambda s: None)
    assert seen == ["webhooks/github/a%2Bb.json"]
