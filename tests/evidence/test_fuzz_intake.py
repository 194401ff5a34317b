"""Property tests of the HTTP intake: job submissions and GitHub webhooks, called exactly as API
Gateway calls the intake function (``Api.handle(proxy_event(...))``).

Properties, for every generated request:
- the handler never raises and never answers 5xx;
- invalid input gets a 4xx with a clear ``error`` (and, for an invalid job, ``problems`` naming
  the order and field); 202 only for input an independent oracle (``faults.oracle``) finds sound;
- a rejected request leaves nothing behind: no run item, no S3 object, no Step Functions
  execution, no idempotency or delivery record; the one exception is the replay record of a
  verified ``POST /jobs`` or cancel (``store.replays``), written before the route acts whatever
  it answers, and never for a 401.

The defects this file found are pinned by the regression tests at its end.
Examples are derandomized (reproducible in CI); set IAC_CI_FUZZ_RANDOM=1 to explore afresh.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from support.faults.oracle import accepted_job_problems, pull_request_problems
from support.paths import GITHUB_FIXTURES, REPO_ROOT

from iac_ci.embedded.apigw import proxy_event
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.intake import signature
from lambda_runtime.schema import layout
from lambda_runtime.schema.deployment import INTAKE_TIMEOUT_SECONDS
from lambda_runtime.store.replays import Replays

FIXTURES = GITHUB_FIXTURES
GH_SECRET = "gh-" + uuid.uuid4().hex
HEAD_SHA = "3f786850e387550fdab836ed7e6dc881de23001b"

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("IAC_CI_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---- the stack under test --------------------------------------------------------------------


READ_PREFIXES = ("Get", "List", "Describe", "Query", "Scan", "Head", "BatchGet")


class WriteRecorder:
    """Every successful write the intake makes, seen in botocore's ``after-call`` (the intake has no
    other way to change anything). Cheaper than re-listing every table and bucket per example, and
    stricter: a rejected request must not even write and clean up."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def install(self, clients: Any) -> None:
        for service in ("dynamodb", "s3", "stepfunctions", "sqs"):
            clients.client(service).meta.events.register("after-call", self._after_call)

    def _after_call(self, http_response: Any, model: Any, **_kw: Any) -> None:
        if not model.name.startswith(READ_PREFIXES) and http_response.status_code < 300:
            self.writes.append(model.name)

    def take(self) -> list[str]:
        out, self.writes = self.writes, []
        return out


class Intake:
    """One embedded stack (pumps not started: accepted jobs are recorded, never run)."""

    def __init__(self, aws: Any):
        secret_id = "fuzz/github-" + secrets.token_hex(4)
        probe = EmbeddedStack(aws, prefix="z" + secrets.token_hex(4),
                              settings_overrides={"github_webhook_secret_id": secret_id})
        probe.clients.secrets.create_secret(Name=secret_id, SecretString=GH_SECRET)
        self.stack = probe
        self.settings = probe.settings
        self.clients = probe.clients
        self.recorder = WriteRecorder()
        self.recorder.install(probe.clients)
        self.replays = Replays(probe.clients.dynamodb, probe.settings.idempotency_table)
        self.accepted_runs = 0
        self.accepted_webhooks = 0
        self.replay_records = 0

    # every call goes through the API exactly as API Gateway would call the function
    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        sig = next((v for k, v in headers.items() if k.lower() == signature.HEADER.lower() and v), None)
        seen_before = sig is not None and self.replays.seen(sig)
        self.recorder.take()
        resp = self.stack.api.handle(proxy_event(method, path, body, headers), None)
        status = int(resp["statusCode"])
        assert 200 <= status < 500, (status, resp.get("body", "")[:500])
        payload = json.loads(resp.get("body") or "{}")
        assert isinstance(payload, dict)
        if status >= 400:
            message = payload.get("error") or payload.get("message")
            assert isinstance(message, str) and message.strip(), payload
        writes = self.recorder.take()
        if sig is not None and not seen_before and self.replays.seen(sig):  # its signature was recorded
            assert status != 401, "an unauthenticated request wrote a replay record"
            self.replay_records += 1
            writes.remove("PutItem")
        if status == 202 and path == "/jobs":
            self.accepted_runs += 1
            assert sorted(writes) == ["PutItem", "PutObject", "StartExecution"], writes
        elif status == 202 and path == "/webhooks/github":
            self.accepted_webhooks += 1
            assert sorted(writes) == ["PutObject", "TransactWriteItems"], writes  # delivery + body-hash records
        else:
            assert writes == [], f"answered {status} but wrote {writes}"
        return status, payload

    def submit(self, body: bytes, *, content_type: str | None = "application/json", sign: str | None = None,
               idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
        headers: dict[str, str] = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        headers.update(signature.signed_headers(self.stack.webhook_secret, "POST", "/jobs", body, time.time()))
        if sign is not None:  # a fresh timestamp with this signature: what is tried is the signature
            headers[signature.HEADER] = sign
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self.call("POST", "/jobs", body, headers)

    def webhook(self, body: bytes, *, event: str | None = "pull_request", delivery: str | None = None,
                sign: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json",
                   "X-Hub-Signature-256": signature.sign(GH_SECRET, body) if sign is None else sign}
        if event is not None:
            headers["X-GitHub-Event"] = event
        if delivery is not None:
            headers["X-GitHub-Delivery"] = delivery
        return self.call("POST", "/webhooks/github", body, headers)

    def footprint(self) -> tuple[int, ...]:
        """What a request can leave behind: items, objects, executions."""
        ddb, s = self.clients.dynamodb, self.settings
        counts = [ddb.scan(TableName=t, Select="COUNT", ConsistentRead=True)["Count"]
                  for t in (s.orders_table, s.events_table, s.idempotency_table)]
        counts.append(sum(p.get("KeyCount", 0) for p in self.clients.s3.get_paginator("list_objects_v2").paginate(
            Bucket=s.internal_bucket)))
        counts.append(sum(len(p["executions"]) for p in self.clients.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=s.watchdog_arn)))
        return tuple(counts)

    def stored_job(self, run_id: str) -> dict[str, Any]:
        obj = self.clients.s3.get_object(Bucket=self.settings.internal_bucket, Key=layout.job_key(run_id))
        return json.loads(obj["Body"].read())


@pytest.fixture(scope="module")
def intake(aws) -> Intake:
    return Intake(aws)


def note_status(code: int) -> None:
    """Status counts for --hypothesis-show-statistics (a no-op outside a property test)."""
    try:
        hypothesis_event(f"HTTP {code}")
    except InvalidArgument:
        pass


def check_submission(intake: Intake, body: bytes, **kw: Any) -> tuple[int, dict[str, Any]]:
    """Submit and check the shared properties (``Intake.call`` checks the writes); returns the answer."""
    code, answer = intake.submit(body, **kw)
    note_status(code)
    if code == 202:
        job = intake.stored_job(answer["run_id"])
        assert accepted_job_problems(job) == [], (job, accepted_job_problems(job))
    else:
        assert code in (400, 401, 409, 413, 422), (code, answer)
        if code == 400 and answer.get("error") == "invalid job":
            problems = answer["problems"]
            assert problems and all(
                isinstance(p["field"], str) and isinstance(p["message"], str) and p["message"]
                and (p["order"] is None or isinstance(p["order"], str)) for p in problems), problems
    return code, answer


# ---- strategies ---------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c,
                                                                                          max_size=4), max_leaves=16)


def nested(depth: int, leaf: Any = "x", *, as_dict: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


deep = st.integers(min_value=1, max_value=400).map(nested) | st.integers(min_value=1, max_value=400).map(
    lambda d: nested(d, as_dict=True))
huge_text = st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "/", "é", "..", "\x00", "😀"]),
                      st.integers(min_value=100, max_value=40_000))
huge_numbers = st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 1e308, -1e308, 0, -1, 10**4000])
PATH_PARTS = ["..", ".", "a", "dist", "", "~", "C:", "%2e%2e", "\x00", "é", "-rf", "*", "$HOME", " ", ".git", "..."]
tricky_paths = st.sampled_from([
    "/etc/passwd", "../../x", "\\\\server\\share", "C:\\Windows", "./", "dist/../..", "dist/./x", "a//b", "/",
    ".", "..", "dist/..", "dist\\..\\..", "~/x", "\u2025/x", "dist/\x00", "dist/", "./dist", "d" * 1025,
]) | st.lists(st.sampled_from(PATH_PARTS), min_size=1, max_size=5).flatmap(
    lambda parts: st.sampled_from(["/", "\\"]).map(lambda sep: sep.join(parts)))
names = st.sampled_from(["../x", "a/b", "", "-rf", "a" * 64, "a" * 65, "ok", "x y", "é", "a\x00", "build",
                         "deploy", ".hidden", "_x", "A.b-c_d", "$(id)", "*"]) | st.text(max_size=70)
env_names = st.sampled_from(["TOKEN", "PATH", "LD_PRELOAD", "1X", "a-b", "", "X" * 129, "AWS_SECRET_ACCESS_KEY",
                             "IAC_CI_RUN_ID"]) | st.text(max_size=20)
ssm_refs = st.sampled_from([
    "/iac-ci/x", "/iac-ci", "/iac-cix/y", "/iac-ci/../prod/db", "iac-ci/x", "/IAC-CI/x", "/prod/db", "",
    " /iac-ci/x", "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db",
    "arn:aws:ssm:us-east-1:123456789012:parameter/iac-ci/x", "/iac-ci/x:1", "/" + "a" * 3000,
]) | st.text(max_size=40)
secret_refs = st.sampled_from([
    "iac-ci/db", "iac-ci", "iac-cix/db", "prod/db", "iac-ci/../prod/db", "", "IAC-CI/db",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:iac-ci/db-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/iac-ci/db-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:iac-ci-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:999999999999:secret:iac-ci/db",
]) | st.text(max_size=40)
secret_specs = st.lists(
    st.fixed_dictionaries({"env": env_names, "ssm": ssm_refs})
    | st.fixed_dictionaries({"env": env_names, "secret": secret_refs}, optional={"key": st.text(max_size=300)})
    | st.fixed_dictionaries({"env": env_names, "ssm": ssm_refs, "secret": secret_refs})
    | json_values,
    max_size=4)
git_urls = st.sampled_from([
    "https://github.com/acme/infra.git", "http://github.com/x", "file:///etc", "ext::sh -c touch% /tmp/pwned",
    "--upload-pack=touch /tmp/x", "https://user:pass@host/x.git", "git@github.com:acme/x.git", "ssh://h/x", "",
])
git_refs = st.sampled_from(["main", "--output=/tmp/x", "-x", "a..b", "HEAD~1", "$(id)", "v1.0", "", "a b", "@{-1}"])
sources = (st.builds(lambda u, r: {"git": {"url": u, "ref": r}}, git_urls, git_refs)
           | st.builds(lambda u: {"git": {"url": u, "token": {"ssm": "/prod/github-token"}}}, git_urls)
           | st.sampled_from([{"s3": "s3://bucket-a/code.zip"}, {"s3": "s3://../x.zip"}, {"path": "/etc"},
                              {"path": ""}, {"git": {}}, {"s3": "s3://x/y.zip", "path": "/"}, {}]))
roles = st.sampled_from(["arn:aws:iam::123456789012:role/admin", "arn:aws:iam::123456789012:role/../admin",
                         "admin", "arn:aws:iam::*:role/*"])
timeouts = st.integers(min_value=-10, max_value=10**12) | st.sampled_from([900, 901, 28800, 28801, 1.5, "60", True])
inputs = st.lists(st.fixed_dictionaries({"from": names, "path": tricky_paths}) | json_values, max_size=3)

ORDER_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "cmds": st.lists(st.text(max_size=30) | huge_text, max_size=3) | st.just([]) | st.just(["x"] * 201),
    "target": st.sampled_from(["lambda", "codebuild", "ec2", "", "LAMBDA"]),
    "timeout": timeouts,
    "depends_on": st.lists(names, max_size=3) | st.just(["build"]) | st.just(["deploy"]),
    "must_succeed": st.sampled_from([True, False, "false", 0, None]),
    "dir": tricky_paths,
    "source": sources,
    "env": st.dictionaries(env_names, st.text(max_size=20) | huge_text, max_size=3),
    "secrets": secret_specs,
    "aws_role": roles,
    "artifacts": st.lists(tricky_paths, max_size=3),
    "inputs": inputs,
    "depends-on": st.just(["build"]),  # a typo'd field must be an error, not an ignored dependency
}
JOB_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "username": names,
    "repo": st.sampled_from(["acme/infra", "acme", "../x/y", "a/b/c", ""]) | st.text(max_size=20),
    "pr_number": st.integers(min_value=-5, max_value=10**20) | st.sampled_from(["7", 7.0, True]),
    "commit": st.sampled_from(["abc1234", "zzzzzzz", HEAD_SHA, "a" * 65, ""]) | st.text(max_size=70),
    "timeout": timeouts,
    "env": st.dictionaries(env_names, st.text(max_size=20), max_size=3),
    "source": sources,
    "orders": st.just([]) | json_values | st.just([{"name": f"o{i}", "cmds": ["true"]} for i in range(5001)]),
    "extra": json_values,
}
ANY_VALUE = json_values | deep | huge_text | huge_numbers | tricky_paths

BASE_JOB: dict[str, Any] = {
    "name": "fuzz",
    "username": "fuzzer",
    "orders": [
        {"name": "build", "target": "lambda", "dir": "app", "cmds": ["make"], "artifacts": ["dist"]},
        {
            "name": "deploy",
            "depends_on": ["build"],
            "inputs": [{"from": "build", "path": "dist"}],
            "secrets": [{"env": "TOKEN", "ssm": "/iac-ci/x"}, {"env": "DB", "secret": "iac-ci/db", "key": "password"}],
            "cmds": ["./deploy.sh"],
        },
    ],
}


@st.composite
def mutated_jobs(draw: st.DrawFn) -> dict[str, Any]:
    job = copy.deepcopy(BASE_JOB)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["job", 0, 1, 1]))
        orders = job.get("orders")
        if where != "job" and isinstance(orders, list) and len(orders) > where and isinstance(orders[where], dict):
            target, fields = orders[where], ORDER_FIELDS
        else:
            target, fields = job, JOB_FIELDS
        name = draw(st.sampled_from(sorted(fields)))
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            target.pop(name, None)
        else:
            target[name] = draw(fields[name] | ANY_VALUE) if draw(st.booleans()) else draw(fields[name])
    return job


def encode(doc: Any, kind: str) -> tuple[bytes, str | None]:
    """The same document as JSON, YAML or the legacy base64 envelope."""
    import yaml

    try:
        if kind == "yaml":
            return yaml.safe_dump(doc, allow_unicode=True).encode(), "application/yaml"
        raw = json.dumps(doc).encode()
    except (ValueError, OverflowError, RecursionError):  # not representable that way (e.g. too deep to dump)
        assume(False)
        raise
    if kind == "b64":
        return json.dumps({"job_parameters_b64": base64.b64encode(raw).decode()}).encode(), "application/json"
    return raw, "application/json"


# ---- job submissions ------------------------------------------------------------------------------


@FUZZ
@given(job=mutated_jobs(), kind=st.sampled_from(["json", "json", "yaml", "b64"]))
def test_mutated_jobs_are_accepted_only_when_sound(intake, job, kind) -> None:
    body, content_type = encode(job, kind)
    assume(len(body) <= 1_200_000)
    check_submission(intake, body, content_type=content_type)


@FUZZ
@given(doc=json_values | deep, kind=st.sampled_from(["json", "yaml", "b64"]))
def test_arbitrary_documents_are_rejected_cleanly(intake, doc, kind) -> None:
    body, content_type = encode(doc, kind)
    code, _ = check_submission(intake, body, content_type=content_type)
    assert code == 400


@FUZZ
@given(body=st.binary(max_size=3000),
       content_type=st.sampled_from(["application/json", "application/yaml", "text/plain", None,
                                     "application/x-yaml; charset=utf-8", "multipart/form-data"]))
def test_arbitrary_bytes_are_rejected_cleanly(intake, body, content_type) -> None:
    check_submission(intake, body, content_type=content_type)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("{}[]:,-?&*!|>'\"%@`#\n\t abc123.\\")), max_size=300))
def test_yaml_syntax_soup_is_rejected_cleanly(intake, text) -> None:
    check_submission(intake, text.encode(), content_type="application/yaml")


BAD_SIGNATURES = st.sampled_from(["", "sha256=", "sha1=abc", "sha256=" + "0" * 64, "SHA256=" + "0" * 64,
                                  "sha256=\u00e9", "sha256=" + "g" * 64, " " * 3]) | st.text(max_size=80)


@FUZZ
@given(sig=BAD_SIGNATURES | st.builds(lambda b: signature.sign("wrong-secret", b), st.binary(max_size=50)),
       idem=st.none() | st.text(max_size=300))
def test_bad_signatures_are_401_and_leave_nothing(intake, sig, idem) -> None:
    body = json.dumps(BASE_JOB).encode()
    assume(sig.strip() != signature.sign(intake.stack.webhook_secret, body))
    code, answer = intake.submit(body, sign=sig, idempotency_key=idem)
    assert code == 401 and "signature" in answer["error"]


@FUZZ
@given(body=st.binary(min_size=1, max_size=200))
def test_a_signature_of_another_body_is_401(intake, body) -> None:
    job = json.dumps(BASE_JOB).encode()
    assume(body != job)
    other = signature.signed_headers(intake.stack.webhook_secret, "POST", "/jobs", body, time.time())
    code, _ = intake.call("POST", "/jobs", job, {"Content-Type": "application/json", **other})
    assert code == 401


def deep_text(depth: int, *, as_dict: bool = False) -> str:
    """A nested JSON (and YAML flow) value, written out directly: json.dumps itself stops at ~1000 levels."""
    return ('{"k":' * depth + '"x"' + "}" * depth) if as_dict else ("[" * depth + '"x"' + "]" * depth)


@pytest.mark.parametrize("depth", [50, 900, 990, 5000, 100_000])
@pytest.mark.parametrize("where", ["top", "orders", "env", "cmds", "secrets", "source", "inputs"])
@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_deep_nesting_is_400(intake, depth, where, kind) -> None:
    doc: Any = copy.deepcopy(BASE_JOB)
    placeholder = "__DEEP__"
    if where == "top":
        doc = placeholder
    elif where == "orders":
        doc["orders"] = placeholder
    elif where == "env":
        doc["orders"][0]["env"] = {"X": placeholder}
    elif where == "cmds":
        doc["orders"][0]["cmds"] = [placeholder]
    else:
        doc["orders"][1][where] = placeholder
    text = json.dumps(doc).replace(f'"{placeholder}"', deep_text(depth, as_dict=where in ("env", "top")))
    code, answer = check_submission(intake, text.encode(),
                                    content_type="application/json" if kind == "json" else "application/yaml")
    assert code == 400, answer


@pytest.mark.parametrize("case", ["body-over-limit", "cmd-too-long", "5001-orders", "env-value-too-long",
                                  "many-problems", "huge-int", "idempotency-key-too-long"])
def test_huge_values_are_4xx(intake, case) -> None:
    job = copy.deepcopy(BASE_JOB)
    kw: dict[str, Any] = {}
    if case == "body-over-limit":
        job["env"] = {f"K{i}": "v" * 30000 for i in range(40)}
    elif case == "cmd-too-long":
        job["orders"][0]["cmds"] = ["x" * 16385]
    elif case == "5001-orders":
        job["orders"] = [{"name": f"o{i}", "cmds": ["true"]} for i in range(5001)]
    elif case == "env-value-too-long":
        job["env"] = {"K": "v" * 32769}
    elif case == "many-problems":
        job["orders"] = [{"name": f"o{i}", "cmds": [], "timeout": -1, "depends_on": ["ghost"]} for i in range(3000)]
    elif case == "idempotency-key-too-long":
        kw["idempotency_key"] = "k" * 256
    body = json.dumps(job).encode() if case != "huge-int" else (
        json.dumps(job)[:-1] + ', "timeout": ' + "9" * 5000 + "}").encode()
    code, answer = check_submission(intake, body, **kw)
    assert code == (413 if case == "body-over-limit" else 400), answer


# ---- GitHub webhooks ------------------------------------------------------------------------------


def base_pull_request() -> dict[str, Any]:
    doc = json.loads((FIXTURES / "pull_request_opened.json").read_text())
    doc["pull_request"]["head"]["sha"] = HEAD_SHA
    return doc


PR_PATHS = [("action",), ("number",), ("repository",), ("repository", "full_name"), ("pull_request",),
            ("pull_request", "number"), ("pull_request", "head"), ("pull_request", "head", "sha"),
            ("pull_request", "head", "repo"), ("pull_request", "head", "repo", "clone_url"),
            ("installation",), ("installation", "id")]
deliveries = (st.uuids().map(str) | st.sampled_from(["", "../../x", "a/b", "x" * 64, "x" * 65, "é", "a b", "-",
                                                     "..", "%2e%2e", "a\x00b"]) | st.text(max_size=70))
events = st.sampled_from(["pull_request", "pull_request", "ping", "push", "issue_comment", ""]) | st.text(max_size=20)


@st.composite
def pull_request_payloads(draw: st.DrawFn) -> Any:
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(json_values)
    doc = base_pull_request()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        path = draw(st.sampled_from(PR_PATHS))
        parent = doc
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(st.sampled_from(["opened", "synchronize", "closed", "reopened", "edited"])
                                    | json_values | huge_text | huge_numbers)
    return doc


@FUZZ
@given(payload=pull_request_payloads(), event=events, delivery=deliveries,
       signed=st.sampled_from(["yes", "yes", "yes", "no", "wrong", "other-body"]))
def test_github_webhooks(intake, payload, event, delivery, signed) -> None:
    try:
        body = json.dumps(payload).encode()
    except ValueError:
        assume(False)
    sig = {"yes": None, "no": "", "wrong": signature.sign("not-the-secret", body),
           "other-body": signature.sign(GH_SECRET, body + b" ")}[signed]
    code, answer = intake.webhook(body, event=event, delivery=delivery, sign=sig)
    note_status(code)
    if signed != "yes":
        assert code == 401
        return
    problems = pull_request_problems(payload)
    if code == 202:
        assert not problems, (problems, payload)
        assert answer == {"queued": True, "delivery": delivery}
        key = layout.webhook_key("github", delivery)
        stored = intake.clients.s3.get_object(Bucket=intake.settings.internal_bucket, Key=key)["Body"].read()
        assert stored == body
        assert intake.webhook(body, event=event, delivery=delivery) == (200, {"duplicate": True, "delivery": delivery})
    else:
        assert code in (200, 400), (code, answer)
        if code == 200:
            assert answer.get("pong") or "ignored" in answer or answer.get("duplicate")
            if event == "pull_request" and isinstance(payload, dict) and payload.get("action") in (
                    "opened", "synchronize", "reopened") and "duplicate" not in answer:
                raise AssertionError(f"a pull_request {payload.get('action')} was ignored: {answer}")


@FUZZ
@given(body=st.binary(max_size=2000), event=events, delivery=deliveries)
def test_github_arbitrary_signed_bytes(intake, body, event, delivery) -> None:
    code, _ = intake.webhook(body, event=event, delivery=delivery)
    assert code in (200, 202, 400)


# ---- the other routes -------------------------------------------------------------------------------


run_ids = st.text(max_size=60) | st.sampled_from(["..", "%2e%2e", "a/b", "x" * 1000, "é", " ", "0" * 16])


@FUZZ
@given(run_id=run_ids, route=st.sampled_from(["status", "cancel", "cancel-stale", "cancel-other"]))
def test_status_and_cancel_of_any_run_id(intake, run_id, route) -> None:
    assume(run_id and "/" not in run_id)
    secret = intake.stack.webhook_secret
    if route == "status":
        path = f"/runs/{run_id}"
        code, _ = intake.call("GET", path, None, signature.signed_headers(secret, "GET", path, None, time.time()))
        assert code in (404, 401)
    else:
        signed_path = f"/runs/{run_id if route != 'cancel-other' else run_id + 'x'}/cancel"
        now = time.time() - (1000 if route == "cancel-stale" else 0)
        code, _ = intake.call("POST", f"/runs/{run_id}/cancel", b"{}",
                              signature.signed_headers(secret, "POST", signed_path, b"{}", now))
        assert code == 404 if route == "cancel" else code in (401, 404)  # 404 also when no route matches the id


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
       path=st.sampled_from(["/", "/jobs", "/jobs/", "/runs", "/runs/", "/webhooks", "/webhooks/github/x",
                             "/../jobs", "//jobs", "/JOBS"]) | st.text(max_size=40).map(lambda t: "/" + t),
       body=st.none() | st.binary(max_size=100))
def test_any_route_and_method(intake, method, path, body) -> None:
    code, _ = intake.call(method, path, body, {})
    assert 400 <= code < 500


# ---- regressions: defects this file found (fixed since) -----------------------------------------------


YAML_CONSTRUCTOR_VALUES = ["a: 2020-13-45", "timeout: " + "1" * 5000, "name: !!int abc", "name: !!float x",
                           "orders: [!!timestamp 2001-99-99]"]


@pytest.mark.parametrize("via", ["yaml", "b64"])
@pytest.mark.parametrize("text", YAML_CONSTRUCTOR_VALUES, ids=["bad-date", "huge-int", "int-tag", "float-tag",
                                                                 "timestamp-tag"])
def test_yaml_values_pyyaml_cannot_construct_are_400(intake, text, via) -> None:
    """Regression: intake.logic._load caught only yaml.YAMLError and RecursionError, but PyYAML's
    SafeConstructor raises plain ValueError for well-formed YAML it cannot construct (an invalid date,
    an int of more than 4300 digits, !!int abc, !!float x): Api.handle raised, API Gateway answered 5xx.
    Reached through Content-Type: application/yaml and through the job_parameters_b64 envelope."""
    raw = text.encode()
    if via == "b64":
        raw, content_type = json.dumps({"job_parameters_b64": base64.b64encode(raw).decode()}).encode(), None
    else:
        content_type = "application/yaml"
    code, _ = check_submission(intake, raw, content_type=content_type)
    assert code == 400


@pytest.mark.parametrize("action", [["opened"], {"a": 1}])
def test_a_pull_request_with_a_non_string_action_is_400(intake, action) -> None:
    """Regression: GitHubWebhooks.receive tested `payload.get('action') not in PR_ACTIONS` (a set), so a
    signed pull_request payload whose action is a JSON array or object raised TypeError: a 5xx."""
    doc = {**base_pull_request(), "action": action}
    code, _ = intake.webhook(json.dumps(doc).encode(), delivery=str(uuid.uuid4()))
    assert code in (200, 400)


@pytest.mark.parametrize("field", ["full_name", "sha", "clone_url", "number"])
def test_a_pull_request_with_mistyped_fields_is_400(intake, field) -> None:
    """Regression: _pull_request_problem checked presence and truthiness only, so a signed pull_request
    whose repository.full_name was an object, head.sha a number, head.repo.clone_url a list or number
    `true` was answered 202 and queued, and packaging failed on it at every delivery (a poison message)."""
    doc = base_pull_request()
    if field == "full_name":
        doc["repository"]["full_name"] = {"owner": "acme"}
    elif field == "sha":
        doc["pull_request"]["head"]["sha"] = 12345
    elif field == "clone_url":
        doc["pull_request"]["head"]["repo"]["clone_url"] = ["https://x"]
    else:
        doc["pull_request"]["number"] = True
    code, answer = intake.webhook(json.dumps(doc).encode(), delivery=str(uuid.uuid4()))
    assert code == 400, answer


def test_yaml_aliases_cannot_expand_a_body_past_the_size_limit(intake) -> None:
    """Regression: YAML anchors/aliases bypassed max_body_bytes: a 17 KB YAML body whose orders share one
    aliased list of fifty 16 KB commands was accepted and stored as a 16 MB job.json; at the schema maxima
    (5,000 orders x 200 commands x 16 KiB) a ~100 KB body expands to ~16 GB in the intake's memory."""
    big = "x" * 16000
    cmds = ", ".join(['&s "' + big + '"'] + ["*s"] * 49)
    text = f"name: bomb\norders:\n  - name: o0\n    cmds: &c [{cmds}]\n" + "".join(
        f"  - name: o{i}\n    cmds: *c\n" for i in range(1, 20))
    code, answer = intake.submit(text.encode(), content_type="application/yaml")
    if code == 202:
        head = intake.clients.s3.head_object(Bucket=intake.settings.internal_bucket,
                                             Key=layout.job_key(answer["run_id"]))
        assert head["ContentLength"] <= intake.settings.max_body_bytes, head["ContentLength"]
    else:
        assert code in (400, 413)


_VALIDATE_IN_A_LAMBDA = """
import json, sys, time
from lambda_runtime.intake.logic import parse_submission
from lambda_runtime.job.validate import JobValidationError, parse_job
body = sys.stdin.buffer.read()
try:
    parse_job(parse_submission(body, "application/json"))
except JobValidationError:
    pass
print("validated")
"""


def test_a_large_dense_graph_is_validated_within_the_intake_timeout() -> None:
    """Regression: _graph_problems computed dag.ancestors() for every order, inputs or not: O(orders^2 x
    fan-in). A signed ~990 KB job (5,000 orders, each depending on the previous 25) took ~25 s of CPU to
    validate, past the intake function's 10 s timeout: the client got a 5xx instead of an answer."""
    name = "{:x}".format
    job = {"name": "dense", "orders": [
        {"name": name(i), "cmds": ["true"], "depends_on": [name(j) for j in range(max(0, i - 25), i)]}
        for i in range(5000)]}
    body = json.dumps(job, separators=(",", ":")).encode()
    assert len(body) < 1_000_000
    # the validation the intake runs before answering, in its own process so it can be stopped at the timeout
    proc = subprocess.Popen([sys.executable, "-c", _VALIDATE_IN_A_LAMBDA], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        out, _ = proc.communicate(body, timeout=INTAKE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(
            f"validation still running after the intake's {INTAKE_TIMEOUT_SECONDS} s timeout") from None
    assert out.strip() == b"validated"


def test_zz_the_stack_holds_exactly_what_was_accepted(intake) -> None:
    """After every test above (same module-scoped stack): the tables, bucket and state machine hold
    exactly the accepted runs and webhooks, nothing from the thousands of rejected requests."""
    orders, events, idempotency, objects, executions = intake.footprint()
    assert orders == intake.accepted_runs and executions == intake.accepted_runs and events == 0
    assert objects == intake.accepted_runs + intake.accepted_webhooks
    assert idempotency == 2 * intake.accepted_webhooks + intake.replay_records  # delivery + body-hash records
