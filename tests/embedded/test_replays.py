"""Replay protection of the signed API, attacked over real HTTP.

The intake is served on loopback exactly as ``iac-ci serve`` serves it (``HttpApi`` in front of
the same ``Api`` the Lambda function runs), on freshly provisioned tables and buckets. Each attack
sends bytes on a socket and then counts what the store holds: run items, job objects and watchdog
executions (the three writes that make a run), and the replay records themselves.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support.faults.aws_faults import LostResponses

from iac_ci.embedded.http_api import HttpApi
from iac_ci.remote.client import ApiClient
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.intake import signature
from lambda_runtime.intake.handler import build
from lambda_runtime.settings import Settings
from lambda_runtime.store import replays as replays_module
from lambda_runtime.store.replays import Replays
from lambda_runtime.store.runs import RunStore

JOB = {"name": "demo", "username": "alice", "orders": [{"name": "a", "cmds": ["true"]}]}
BODY = json.dumps(JOB).encode()
REPLAYED = "this signed request was already received"


class Clock:
    """The intake's clock: real time, moved on when a test needs the window to pass."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Served:
    url: str
    secret: str
    settings: Settings
    clients: AwsClients
    clock: Clock

    def headers(self, method: str, path: str, body: bytes | None, *, at: float | None = None) -> dict[str, str]:
        return signature.signed_headers(self.secret, method, path, body, self.clock() if at is None else at)

    def footprint(self) -> tuple[int, int, int]:
        """(run items, job objects, watchdog executions): each accepted run makes one of each."""
        ddb, s = self.clients.dynamodb, self.settings
        runs = ddb.scan(TableName=s.orders_table, ConsistentRead=True, FilterExpression="sk = :run",
                        ExpressionAttributeValues={":run": {"S": "#run"}})["Items"]
        objects = self.clients.s3.list_objects_v2(Bucket=s.internal_bucket).get("Contents", [])
        jobs = [o for o in objects if o["Key"].endswith("/job.json")]
        executions = self.clients.sfn.list_executions(stateMachineArn=s.watchdog_arn)["executions"]
        return len(runs), len(jobs), len(executions)

    def store(self) -> RunStore:
        return RunStore(self.clients.dynamodb, self.settings.orders_table, self.settings.events_table)

    def replay_records(self) -> list[dict[str, Any]]:
        items = self.clients.dynamodb.scan(TableName=self.settings.idempotency_table, ConsistentRead=True)["Items"]
        return [i for i in items if i["id"]["S"].startswith(replays_module.KEY_PREFIX)]


@pytest.fixture()
def served(stack, clients) -> Iterator[Served]:
    settings, _ = stack
    secret = clients.secrets.get_secret_value(SecretId=settings.webhook_secret_id)["SecretString"]
    clock = Clock()
    with HttpApi(build(settings, clients, clock=clock)) as http:
        yield Served(http.url, secret, settings, clients, clock)


def send(url: str, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict]:
    """One HTTP request, exactly these bytes and headers; the answer whatever its status."""
    req = urllib.request.Request(url + path, data=body, method=method,
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ---- POST /jobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("idempotency_key", [None, "deploy-42"])
def test_a_replayed_submission_is_409_and_starts_no_second_run(served, idempotency_key) -> None:
    """The issue: the same signed POST /jobs sent twice started two runs. With an Idempotency-Key
    too: a replay is refused, not answered with the first run (it is not the client retrying)."""
    headers = served.headers("POST", "/jobs", BODY)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    first = send(served.url, "POST", "/jobs", BODY, headers)
    assert first[0] == 202
    assert served.footprint() == (1, 1, 1)
    for _ in range(3):
        code, answer = send(served.url, "POST", "/jobs", BODY, headers)
        assert code == 409 and REPLAYED in answer["error"] and "run_id" not in answer
    assert served.footprint() == (1, 1, 1)
    assert len(served.replay_records()) == 1


def test_concurrent_replays_start_one_run(served) -> None:
    """The record is one conditional write: of copies sent at once, exactly one gets through."""
    headers = served.headers("POST", "/jobs", BODY)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(send(served.url, "POST", "/jobs", BODY, headers)[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [202] + [409] * 7
    assert served.footprint() == (1, 1, 1)


def test_the_same_body_signed_again_is_a_new_run(served) -> None:
    """Only the exact signed request is a replay: the same job submitted twice by the key holder is two runs."""
    assert send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))[0] == 202
    assert send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))[0] == 202
    assert served.footprint() == (2, 2, 2)


def test_a_resigned_retry_with_the_idempotency_key_returns_the_first_run(served) -> None:
    """A client retry signs anew (not a replay) and its Idempotency-Key answers the first run."""
    first = send(served.url, "POST", "/jobs", BODY, {**served.headers("POST", "/jobs", BODY), "Idempotency-Key": "k1"})
    again = send(served.url, "POST", "/jobs", BODY, {**served.headers("POST", "/jobs", BODY), "Idempotency-Key": "k1"})
    assert first[0] == again[0] == 202 and first[1]["run_id"] == again[1]["run_id"]
    assert served.footprint() == (1, 1, 1)


def test_a_replay_after_the_window_is_refused_by_its_timestamp(served) -> None:
    headers = served.headers("POST", "/jobs", BODY)
    assert send(served.url, "POST", "/jobs", BODY, headers)[0] == 202
    served.clock.offset = signature.MAX_SKEW_SECONDS + 1
    code, answer = send(served.url, "POST", "/jobs", BODY, headers)
    assert code == 401 and signature.TIMESTAMP_HEADER in answer["error"]
    assert served.footprint() == (1, 1, 1)


@pytest.mark.parametrize("offset", [-360, 360], ids=["6-minutes-old", "6-minutes-ahead"])
def test_a_timestamp_six_minutes_away_is_401_naming_the_timestamp(served, offset) -> None:
    headers = served.headers("POST", "/jobs", BODY, at=time.time() + offset)
    code, answer = send(served.url, "POST", "/jobs", BODY, headers)
    assert code == 401
    assert answer["error"] == signature.Verdict.STALE_TIMESTAMP.message
    assert signature.TIMESTAMP_HEADER in answer["error"]
    assert served.footprint() == (0, 0, 0) and served.replay_records() == []


@pytest.mark.parametrize("timestamp", [None, "", "nan", "inf", "1.7e9", "-5", "yesterday"])
def test_a_missing_or_garbage_timestamp_is_401_naming_the_timestamp(served, timestamp) -> None:
    text = timestamp or ""
    headers = {signature.HEADER: signature.sign(served.secret, signature.canonical(text, "POST", "/jobs", BODY))}
    if timestamp is not None:
        headers[signature.TIMESTAMP_HEADER] = timestamp
    code, answer = send(served.url, "POST", "/jobs", BODY, headers)
    assert code == 401 and answer["error"] == signature.Verdict.BAD_TIMESTAMP.message
    assert served.footprint() == (0, 0, 0) and served.replay_records() == []


@pytest.mark.parametrize("with_timestamp", [False, True])
def test_the_old_body_only_signature_is_401(served, with_timestamp) -> None:
    """The vulnerable scheme (HMAC of the body alone) is not accepted in any form."""
    headers = {signature.HEADER: signature.sign(served.secret, BODY)}
    if with_timestamp:
        headers[signature.TIMESTAMP_HEADER] = signature.format_timestamp(time.time())
    code, answer = send(served.url, "POST", "/jobs", BODY, headers)
    assert code == 401
    expected = signature.Verdict.BAD_SIGNATURE if with_timestamp else signature.Verdict.BAD_TIMESTAMP
    assert answer["error"] == expected.message
    assert served.footprint() == (0, 0, 0) and served.replay_records() == []


def test_a_captured_request_with_a_fresh_timestamp_is_401(served) -> None:
    """The attack on the timestamp check: keep the captured signature, move its timestamp into the window."""
    captured = served.headers("POST", "/jobs", BODY, at=time.time() - 3600)
    tampered = {**captured, signature.TIMESTAMP_HEADER: signature.format_timestamp(time.time())}
    code, answer = send(served.url, "POST", "/jobs", BODY, tampered)
    assert code == 401 and answer["error"] == signature.Verdict.BAD_SIGNATURE.message
    assert served.footprint() == (0, 0, 0) and served.replay_records() == []


def test_a_signature_is_bound_to_its_path(served) -> None:
    """A signed cancel of one run, sent to another run's cancel, is nobody's signature."""
    run_a = send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))[1]["run_id"]
    run_b = send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))[1]["run_id"]
    headers = served.headers("POST", f"/runs/{run_a}/cancel", b"{}")
    code, answer = send(served.url, "POST", f"/runs/{run_b}/cancel", b"{}", headers)
    assert code == 401 and answer["error"] == signature.Verdict.BAD_SIGNATURE.message
    store = served.store()
    assert not store.get_run(run_a).cancel_requested and not store.get_run(run_b).cancel_requested


# ---- POST /runs/{id}/cancel and GET /runs/{id} -----------------------------------------------------------


def test_a_replayed_cancel_is_409_and_changes_nothing(served) -> None:
    run_id = send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))[1]["run_id"]
    path = f"/runs/{run_id}/cancel"
    headers = served.headers("POST", path, b"{}")
    assert send(served.url, "POST", path, b"{}", headers) == (202, {"run_id": run_id, "status": "cancelling"})
    store = served.store()
    first = store.get_run(run_id)
    assert first is not None and first.cancel_requested
    served.clock.offset = 10  # a cancel that got through would stamp a later cancel_requested_at
    code, answer = send(served.url, "POST", path, b"{}", headers)
    assert code == 409 and REPLAYED in answer["error"]
    again = store.get_run(run_id)
    assert again is not None and again.cancel_requested_at == first.cancel_requested_at
    assert len(served.replay_records()) == 2  # the submission and the cancel


def test_status_reads_are_signed_the_same_way_and_may_repeat(served) -> None:
    run_id = send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))[1]["run_id"]
    path = f"/runs/{run_id}"
    headers = served.headers("GET", path, None)
    for _ in range(2):  # a read changes nothing: repeating it is not refused
        code, answer = send(served.url, "GET", path, None, headers)
        assert code == 200 and answer["status"] == "accepted"
    assert len(served.replay_records()) == 1  # only the submission's
    old = {signature.TIMESTAMP_HEADER: headers[signature.TIMESTAMP_HEADER], signature.HEADER: signature.sign(
        served.secret, signature.canonical(headers[signature.TIMESTAMP_HEADER], "GET", f"/runs/{run_id}x", b""))}
    assert send(served.url, "GET", path, None, old)[0] == 401
    stale = served.headers("GET", path, None, at=time.time() - 360)
    code, answer = send(served.url, "GET", path, None, stale)
    assert code == 401 and signature.TIMESTAMP_HEADER in answer["error"]


# ---- the CLI client's retries -------------------------------------------------------------------------


@dataclass
class FlakyProxy:
    """Loopback proxy to the API that fails the first request with a 503: ``lose`` forwards it first
    (the run is accepted, the answer is lost), otherwise it never reaches the API."""

    backend: str
    lose: bool
    attempts: list[dict[str, str]] = field(default_factory=list)  # headers as received, names in lower case
    server: ThreadingHTTPServer | None = None

    def __enter__(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                proxy.attempts.append(headers)
                first = len(proxy.attempts) == 1
                if not first or proxy.lose:
                    status, data = proxy.forward(self.path, body, headers)
                if first:
                    status, data = 503, b'{"message": "Service Unavailable"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def forward(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.backend + path, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.mark.parametrize("lose", [False, True], ids=["refused-503", "lost-answer-503"])
def test_the_client_retry_after_a_503_signs_anew_and_gets_one_run(served, lose) -> None:
    """``iac-ci submit``'s retry is a new signature (never a 409), and even when the first attempt
    was accepted and only its answer lost, the retry answers that run instead of starting another."""
    proxy = FlakyProxy(served.url, lose=lose)
    with proxy as url:
        code, answer = ApiClient(url, served.secret, sleep=lambda _s: None).submit(BODY)
    assert code == 202, answer
    first, retry = proxy.attempts
    ts, sig = signature.TIMESTAMP_HEADER.lower(), signature.HEADER.lower()
    assert first[ts] != retry[ts] and first[sig] != retry[sig]
    assert first["idempotency-key"] == retry["idempotency-key"]
    assert served.footprint() == (1, 1, 1)
    assert len(served.replay_records()) == (2 if lose else 1)
    if lose:  # what the retry would have met had it resent the first attempt's headers
        code, answer = send(served.url, "POST", "/jobs", BODY, first)
        assert code == 409 and REPLAYED in answer["error"]
        assert served.footprint() == (1, 1, 1)


def test_the_client_retry_of_a_cancel_signs_anew(served) -> None:
    run_id = send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))[1]["run_id"]
    proxy = FlakyProxy(served.url, lose=True)
    with proxy as url:
        assert ApiClient(url, served.secret, sleep=lambda _s: None).cancel(run_id) == (
            202, {"run_id": run_id, "status": "cancelling"})
    first, retry = proxy.attempts
    assert first[signature.HEADER.lower()] != retry[signature.HEADER.lower()]


# ---- the record ---------------------------------------------------------------------------------------


def test_a_record_outlives_the_window_of_its_signature(served) -> None:
    replays = Replays(served.clients.dynamodb, served.settings.idempotency_table, clock=lambda: 1_700_000_000.4)
    assert replays.record("sha256=" + "ab" * 32) is True
    assert replays.record("sha256=" + "ab" * 32) is False
    (item,) = served.replay_records()
    assert item["id"]["S"] == replays_module.KEY_PREFIX + "ab" * 32
    # a signature first seen at t carries a timestamp of at most t + 300, which passes until t + 600
    assert int(item["expiration"]["N"]) == 1_700_000_001 + 2 * signature.MAX_SKEW_SECONDS + 60


def test_a_lost_answer_to_the_record_is_not_taken_for_a_replay(served) -> None:
    """The record's PutItem is applied but its answer lost; botocore's retry then fails the condition
    on the item the first attempt wrote. That is this request's own record: 202, one run."""
    lost = LostResponses("dynamodb", "PutItem", lambda body: replays_module.KEY_PREFIX.encode() in body,
                         times=1).install(served.clients)
    code, answer = send(served.url, "POST", "/jobs", BODY, served.headers("POST", "/jobs", BODY))
    assert lost.lost == [200]
    assert code == 202, answer
    assert served.footprint() == (1, 1, 1) and len(served.replay_records()) == 1
