"""Intake over API Gateway proxy events: authentication, validation, recording, idempotency."""

from __future__ import annotations

import base64
import json
import time

import pytest

from iac_ci.embedded.apigw import proxy_event
from lambda_runtime.intake import signature
from lambda_runtime.intake.handler import Api, build
from lambda_runtime.schema import layout

JOB = {
    "name": "demo",
    "username": "alice",
    "orders": [{"name": "a", "cmds": ["true"]}, {"name": "b", "cmds": ["true"], "depends_on": ["a"]}],
}


@pytest.fixture()
def api(stack, clients):
    settings, _ = stack
    secret = clients.secrets.get_secret_value(SecretId=settings.webhook_secret_id)["SecretString"]
    return build(settings, clients), secret, settings


def post(api_obj: Api, secret: str, body: bytes, *, sign: bool = True, **headers: str) -> tuple[int, dict]:
    hdrs = {"Content-Type": "application/json", **headers}
    if sign:
        hdrs.update(signature.signed_headers(secret, "POST", "/jobs", body, time.time()))
    resp = api_obj.handle(proxy_event("POST", "/jobs", body, hdrs), None)
    return resp["statusCode"], json.loads(resp["body"])


def recorded(clients, settings) -> tuple[int, list[str]]:
    items = clients.dynamodb.scan(TableName=settings.orders_table)["Items"]
    keys = [o["Key"] for o in clients.s3.list_objects_v2(Bucket=settings.internal_bucket).get("Contents", [])]
    return len(items), keys


def test_accepts_a_signed_job_and_records_it(api, clients) -> None:
    app, secret, settings = api
    code, body = post(app, secret, json.dumps(JOB).encode())
    assert code == 202
    run_id = body["run_id"]
    assert body["trace_id"].startswith(run_id + ":") and body["flow_id"] == f"alice:{run_id}-demo"
    assert body["done"] == f"s3://{settings.done_bucket}/{run_id}/done"
    stored = json.loads(
        clients.s3.get_object(Bucket=settings.internal_bucket, Key=layout.job_key(run_id))["Body"].read()
    )
    assert [o["name"] for o in stored["orders"]] == ["a", "b"]
    item = clients.dynamodb.get_item(
        TableName=settings.orders_table, Key={"run_id": {"S": run_id}, "sk": {"S": "#run"}}
    )["Item"]
    assert item["status"]["S"] == "accepted" and item["timeout"]["N"] == "21600"


@pytest.mark.parametrize("header", [None, "sha256=" + "0" * 64, "md5=abc", "sha256="])
def test_bad_signature_is_401_and_records_nothing(api, clients, header) -> None:
    app, secret, settings = api
    hdrs = {signature.HEADER: header} if header else {}
    hdrs[signature.TIMESTAMP_HEADER] = signature.format_timestamp(time.time())
    code, body = post(app, secret, json.dumps(JOB).encode(), sign=False, **hdrs)
    assert code == 401
    assert recorded(clients, settings) == (0, [])


def test_signature_of_another_body_is_rejected(api, clients) -> None:
    app, secret, settings = api
    other = signature.signed_headers(secret, "POST", "/jobs", b"{}", time.time())
    code, _ = post(app, secret, json.dumps(JOB).encode(), sign=False, **other)
    assert code == 401


def test_invalid_job_is_400_with_every_problem_and_records_nothing(api, clients) -> None:
    app, secret, settings = api
    bad = {
        "name": "demo",
        "orders": [{"name": "a", "cmds": ["x"], "depends_on": ["ghost"], "timeout": -1}, {"name": "a", "cmds": []}],
    }
    code, body = post(app, secret, json.dumps(bad).encode())
    assert code == 400 and body["error"] == "invalid job"
    found = {(p["order"], p["field"]) for p in body["problems"]}
    assert {("a", "depends_on"), ("a", "timeout"), ("a", "cmds"), ("a", "name")} <= found
    assert recorded(clients, settings) == (0, [])


def test_a_job_asking_for_the_api_signing_key_is_refused_and_records_nothing(api, clients) -> None:
    """The attack: a signed job names the engine's own key (by name and by ARN) to print it."""
    app, secret, settings = api
    arn = clients.secrets.describe_secret(SecretId=settings.webhook_secret_id)["ARN"]
    assert not settings.webhook_secret_id.startswith(settings.allowed_secret_prefixes)  # stored outside them
    job = {"name": "steal", "orders": [{"name": "exfil", "cmds": ["echo $K | base64"], "secrets": [
        {"env": "K", "secret": settings.webhook_secret_id}, {"env": "K2", "secret": arn}]}]}
    code, body = post(app, secret, json.dumps(job).encode())
    assert code == 400
    found = [(p["order"], p["field"], p["message"]) for p in body["problems"]]
    assert [(o, f) for o, f, _ in found] == [("exfil", "secrets[0]"), ("exfil", "secrets[1]")]
    assert all("engine's own credentials" in m for _, _, m in found)
    assert recorded(clients, settings) == (0, [])


@pytest.mark.parametrize("raw", [b"", b"not json {", b"\xff\xfe", b"[1,2]", b'"x"', b"[" * 5000])
def test_malformed_bodies_are_4xx(api, clients, raw) -> None:
    app, secret, settings = api
    code, body = post(app, secret, raw)
    assert 400 <= code < 500 and body["error"]
    assert recorded(clients, settings) == (0, [])


def test_oversized_body_is_413(api, clients) -> None:
    app, secret, settings = api
    big = json.dumps({**JOB, "env": {"X": "y" * 32000}, "orders": JOB["orders"] * 1}).encode() * 40
    code, _ = post(app, secret, big)
    assert code == 413


def test_yaml_and_legacy_envelope(api) -> None:
    app, secret, _ = api
    yaml_body = b"name: demo\norders:\n  - name: a\n    cmds: [ 'true' ]\n"
    assert post(app, secret, yaml_body, **{"Content-Type": "application/yaml"})[0] == 202
    env = json.dumps({"job_parameters_b64": base64.b64encode(json.dumps(JOB).encode()).decode()}).encode()
    assert post(app, secret, env)[0] == 202
    code, body = post(app, secret, json.dumps({"job_parameters_b64": "%%%"}).encode())
    assert code == 400 and "base64" in body["error"]


def test_idempotency_key_replay_returns_the_first_run(api, clients) -> None:
    app, secret, settings = api
    raw = json.dumps(JOB).encode()
    first = post(app, secret, raw, **{"Idempotency-Key": "deploy-42"})
    again = post(app, secret, raw, **{"Idempotency-Key": "deploy-42"})
    assert first[0] == again[0] == 202 and first[1]["run_id"] == again[1]["run_id"]
    other = post(app, secret, json.dumps({**JOB, "name": "other"}).encode(), **{"Idempotency-Key": "deploy-42"})
    assert other[0] == 422
    runs = clients.dynamodb.scan(TableName=settings.orders_table)["Items"]
    assert len(runs) == 1
    assert post(app, secret, raw)[1]["run_id"] != first[1]["run_id"]  # no key: a new run


def test_status_and_cancel_routes(api) -> None:
    app, secret, _ = api
    run_id = post(app, secret, json.dumps(JOB).encode())[1]["run_id"]
    path = f"/runs/{run_id}"
    hdrs = signature.signed_headers(secret, "GET", path, None, time.time())
    resp = app.handle(proxy_event("GET", path, None, hdrs), None)
    assert resp["statusCode"] == 200 and json.loads(resp["body"])["status"] == "accepted"
    stale = signature.signed_headers(secret, "GET", path, None, 1)
    assert app.handle(proxy_event("GET", path, None, stale), None)["statusCode"] == 401
    cancel = f"/runs/{run_id}/cancel"
    resp = app.handle(proxy_event("POST", cancel, b"{}", signature.signed_headers(secret, "POST", cancel, b"{}",
                                                                                time.time())), None)
    assert resp["statusCode"] == 202
    resp = app.handle(proxy_event("POST", "/runs/nope/cancel", b"{}", signature.signed_headers(
        secret, "POST", "/runs/nope/cancel", b"{}", time.time())), None)
    assert resp["statusCode"] == 404


def test_job_timeout_is_armed_at_intake(api, clients) -> None:
    """Even a run whose packaging never happens ends at its deadline."""
    app, secret, settings = api
    run_id = post(app, secret, json.dumps({**JOB, "timeout": 1}).encode())[1]["run_id"]
    arn = settings.watchdog_arn.replace(":stateMachine:", ":execution:") + f":{run_id}-job"
    execution = clients.sfn.describe_execution(executionArn=arn)
    assert json.loads(execution["input"])["key"] == layout.control_key(run_id, layout.SIGNAL_JOB_TIMEOUT)
    deadline = time.monotonic() + 20
    while "Contents" not in clients.s3.list_objects_v2(
        Bucket=settings.internal_bucket, Prefix=layout.control_key(run_id, layout.SIGNAL_JOB_TIMEOUT)
    ):
        assert time.monotonic() < deadline, "the job timeout signal was never written"
        time.sleep(0.3)
