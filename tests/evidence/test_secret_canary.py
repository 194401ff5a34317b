"""Secret canary: jobs print known secret values in every likely form; afterwards nothing the
engine stored or printed may contain them.

Secrets: an SSM SecureString, two keys of a Secrets Manager JSON secret (one multi-line), a third
key nobody references, the GitHub token of the stack, and an SSM value used by a GitHub pull
request's ``.iac-ci.yml``. The commands print them plain, inside URLs, URL-encoded, JSON-escaped,
in an error message, multi-line, on stderr, split across writes, straddling the worker's 64 KiB
line cap, in an ``env`` dump and as the last output without a newline.

Searched afterwards (see ``faults.canary``): every S3 object version of every bucket (archives
unpacked; the sops file in each bundle must hold ciphertext only), every item of every DynamoDB
table, every message left in every SQS queue, every Step Functions execution's input/output, the
worker logs in ``stack.log_dir``, leftover work directories, the fake GitHub's comments and
statuses, this process's captured output and log records, and the live log of a running order as
the log route served it (its every upload is an S3 object version, searched with the rest).

A second, smaller job prints a separate secret in the further forms IaC tools print values in
(JSON as Go and jq write it, JSON inside a JSON string, Python's default URL quoting, bash xtrace of
a value with a quote): the masker once missed all of them (test_masking_covers_common_encodings).
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from support.fakes.github_server import FakeGitHub
from support.faults.canary import Corpus, forms, new_temp_entries, sops_values_are_encrypted, wait_for
from support.paths import GITHUB_FIXTURES

from iac_ci.embedded.apigw import proxy_event
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.intake import order_log, signature
from lambda_runtime.intake.signature import sign
from lambda_runtime.schema import layout

pytestmark = pytest.mark.slow

FIXTURES = GITHUB_FIXTURES
H = uuid.uuid4().hex[:12]
SSM_VALUE = f'Cn{H}"q\\z/+&=:@!%é'  # quote, backslash, slash, URL-reserved, non-ASCII
SM_PASSWORD = f"pw-{H}-s3cr3t!#"
SM_PEM = f"-----BEGIN KEY-----\nl1-{H}-MIIB\nl2-{H}-QAB\n-----END KEY-----"
SM_UNUSED = f"unreferenced-{H}"
PR_VALUE = f"pr-{H}-tok&x<y>"
GITHUB_TOKEN = "ghp_" + (H * 3)[:36]
MORE_VALUE = f"Lk{H}&q\"'é/x y"  # printed only by the further-forms job

SSM_NAME = f"/iac-ci/canary-{H}/token"
PR_SSM_NAME = f"/iac-ci/canary-{H}/pr"
MORE_SSM_NAME = f"/iac-ci/canary-{H}/more-forms"
SM_NAME = f"iac-ci/canary-{H}"
# each value, and the distinctive core of each (no resource name contains one): a core survives any
# escaping or encoding that keeps letters and digits, so an encoding nobody thought of is still found
CANARIES = {
    "ssm": (SSM_VALUE, [f"Cn{H}"]),
    "secret-key": (SM_PASSWORD, [f"pw-{H}"]),
    "secret-pem": (SM_PEM, [f"l1-{H}", f"l2-{H}"]),
    "secret-unreferenced": (SM_UNUSED, [f"unreferenced-{H}"]),
    "pr-ssm": (PR_VALUE, [f"pr-{H}"]),
    "github-token": (GITHUB_TOKEN, [GITHUB_TOKEN]),
}

SECRETS = [{"env": "A", "ssm": SSM_NAME}, {"env": "B", "secret": SM_NAME, "key": "password"},
           {"env": "C", "secret": SM_NAME, "key": "pem"}]
PY = "python -c"
PRINT_EVERY_FORM = [
    'echo "plain A=$A B=$B"',
    'echo "url https://deploy:$A@git.example.com/repo.git?token=$B&x=1"',
    f"{PY} 'import os, urllib.parse as u; print(\"enc\", u.quote(os.environ[\"A\"], safe=\"\"), "
    f"u.quote_plus(os.environ[\"A\"]), u.quote_plus(os.environ[\"B\"]))'",
    f"{PY} 'import json, os; print(json.dumps({{k: os.environ[k] for k in \"ABC\"}}))'",
    'printf "multi-line:\\n%s\\n" "$C"',
    'echo "on stderr A=$A C=$C" >&2',
    'printf "split:%s" "${A:0:5}"; sleep 0.2; printf "%s\\n" "${A:5}"',
    f"{PY} 'import os; print(\"x\" * 65530 + os.environ[\"A\"] + \"y\" * 10)'",  # straddles the 64 KiB line cap
    "env | sort",
    'printf "last-without-newline:%s" "$A"',
]
FAIL_WITH_SECRET = [f"{PY} 'import os, sys; sys.exit(\"login failed for \" + os.environ[\"A\"] + \" / \" + "
                    f"os.environ[\"B\"])'"]

# further forms, printed by separate orders of a separate job with its own secret
MORE_FORMS = {
    # Go's encoding/json (terraform output -json, terraform show -json): UTF-8 kept, & < > escaped
    "go-json": (f"{PY} 'import json, os; print(json.dumps(os.environ[\"D\"], ensure_ascii=False)"
                f".replace(\"&\", \"\\\\u0026\").replace(\"<\", \"\\\\u003c\").replace(\">\", \"\\\\u003e\"))'",
                json.dumps(MORE_VALUE, ensure_ascii=False)[1:-1].replace("&", "\\u0026")),
    # jq -c, most non-Python JSON writers: non-ASCII left as UTF-8
    "jq-json": (f"{PY} 'import json, os; print(json.dumps({{\"d\": os.environ[\"D\"]}}, ensure_ascii=False))'",
                json.dumps(MORE_VALUE, ensure_ascii=False)[1:-1]),
    # urllib.parse.quote's default keeps "/" unescaped
    "python-quote-default": (f"{PY} 'import os, urllib.parse as u; print(u.quote(os.environ[\"D\"]))'",
                             quote(MORE_VALUE)),
    # JSON inside a JSON string, e.g. `aws secretsmanager get-secret-value` printing a JSON SecretString
    "json-in-json": (f"{PY} 'import json, os; print(json.dumps(json.dumps({{\"d\": os.environ[\"D\"]}})))'",
                     json.dumps(json.dumps(MORE_VALUE)[1:-1])[1:-1]),
    # bash xtrace (set -x, common in CI scripts) re-quotes a value holding a single quote
    "bash-xtrace": ('set -x; : "$D"; set +x', MORE_VALUE.replace("'", "'\\''")),
}


# ---- the world: stack, secrets, fake GitHub, a repository ---------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo.parent), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e.x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e.x"}
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def world(aws, tmp_path_factory) -> Any:
    started = time.time()
    seed = AwsClients(region=aws.region)
    seed.ssm.put_parameter(Name=SSM_NAME, Value=SSM_VALUE, Type="SecureString", Overwrite=True)
    seed.ssm.put_parameter(Name=PR_SSM_NAME, Value=PR_VALUE, Type="SecureString", Overwrite=True)
    seed.ssm.put_parameter(Name=MORE_SSM_NAME, Value=MORE_VALUE, Type="SecureString", Overwrite=True)
    seed.secrets.create_secret(Name=SM_NAME, SecretString=json.dumps(
        {"password": SM_PASSWORD, "pem": SM_PEM, "user": SM_UNUSED}))
    # the token under the allowed secret prefix: see test_a_pr_run_with_a_token_secret_of_any_name_succeeds
    hook_secret, token_secret = f"canary-{H}/github-webhook", f"iac-ci/canary-{H}/github-token"
    webhook_key = "whsec-" + secrets.token_hex(8)
    seed.secrets.create_secret(Name=hook_secret, SecretString=webhook_key)
    seed.secrets.create_secret(Name=token_secret, SecretString=GITHUB_TOKEN)

    repo = tmp_path_factory.mktemp("canary") / "infra"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "main.tf").write_text("# canary\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "canary")
    sha = git(repo, "rev-parse", "HEAD")
    fake = FakeGitHub().start()
    fake.files[("acme/infra", sha, ".iac-ci.yml")] = json.dumps({"orders": [{
        "name": "plan", "target": "lambda", "secrets": [{"env": "E", "ssm": PR_SSM_NAME}],
        "cmds": ['echo "plan with E=$E"', f"{PY} 'import json, os; print(json.dumps({{\"e\": os.environ[\"E\"]}}))'",
                 'echo "pr url https://x:$E@example.com"']}]})

    overrides = {"watchdog_grace_seconds": 3, "github_webhook_secret_id": hook_secret,
                 "github_token_secret_id": token_secret, "github_api_url": fake.url,
                 "github_seconds_between_writes": 0.01, "vcs_update_interval_seconds": 0}
    stack = EmbeddedStack(aws, prefix="c" + secrets.token_hex(4), settings_overrides=overrides)
    # the credentials minted at dispatch are deleted once their order is final: versions keep them for the search
    stack.clients.s3.put_bucket_versioning(Bucket=stack.settings.internal_bucket,
                                           VersioningConfiguration={"Status": "Enabled"})
    stack.start()
    world = {"stack": stack, "fake": fake, "repo": repo, "sha": sha, "webhook_key": webhook_key,
             "started": started, "closed": False, "overrides": overrides, "aws": aws}
    yield world
    if not world["closed"]:
        stack.close()
    fake.stop()


def read_live_log(stack: EmbeddedStack, run_id: str, order: str, *, until: str) -> list[dict[str, Any]]:
    """Every answer of the log route (``GET /runs/{id}/log``) from the start of ``order``'s log until
    its text holds ``until``, as ``iac-ci logs --follow`` reads it."""
    answers: list[dict[str, Any]] = []
    offset = 0

    def more() -> bool:
        nonlocal offset
        query = {"order": order, "offset": str(offset)}
        signed_for = order_log.signed_path(run_id, order, str(offset))
        headers = signature.signed_headers(stack.webhook_secret, "GET", signed_for, None, time.time())
        resp = stack.api.handle(proxy_event("GET", f"/runs/{run_id}/log", None, headers, query), None)
        code, answer = int(resp["statusCode"]), json.loads(resp["body"])
        assert code == 200, answer
        answers.append(answer)
        offset = answer["next_offset"]
        return until in "".join(a["text"] for a in answers)

    wait_for(more, what=f"{until!r} in the live log of {order}", poll=0.2)
    return answers


def run(stack: EmbeddedStack, job: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    code, body = stack.submit(job)
    assert code == 202, body
    return stack.wait(body["run_id"], timeout=timeout)


# ---- the further-forms job (runs first; the stack stays up for the canary below) ------------------------


@pytest.fixture(scope="module")
def more_forms(world) -> tuple[dict[str, Any], Corpus]:
    stack = world["stack"]
    done = run(stack, {"name": "more-forms", "orders": [
        {"name": name, "target": "lambda", "secrets": [{"env": "D", "ssm": MORE_SSM_NAME}],
         "cmds": [f"echo form={name}", cmd]} for name, (cmd, _needle) in MORE_FORMS.items()]})
    clients = AwsClients(region=stack.aws.region)
    # the queues are left to the running consumers here; the canary below reads them once they stop
    corpus = Corpus().collect_aws(clients, skip_queues=clients.sqs.list_queues().get("QueueUrls", []),
                                  only=stack.settings.orders_table.removesuffix("-orders"))
    corpus.collect_files([stack.log_dir], "worker logs")
    return done, corpus


def test_the_more_forms_job_ran(more_forms) -> None:
    done, _ = more_forms
    assert done["status"] == "succeeded", done
    for name in MORE_FORMS:
        assert f"form={name}" in done["orders"][name]["log_tail"]
    assert MORE_VALUE not in json.dumps(done, ensure_ascii=False)  # the plain value itself is masked


@pytest.mark.parametrize("form", sorted(MORE_FORMS))
def test_masking_covers_common_encodings(more_forms, form) -> None:
    """Regression: masking.Masker knew only the plain value, Python's ASCII JSON escaping, quote(safe='')
    and quote_plus, and stripped lines, so forms common in IaC output reached log.txt, result.json, the
    done object and DynamoDB unmasked: Go JSON (terraform output/show -json escape & < > as \\u0026),
    JSON that keeps non-ASCII (jq), JSON inside a JSON string (aws secretsmanager get-secret-value),
    urllib.parse.quote's default (keeps '/'), bash xtrace of a value holding a quote."""
    _, corpus = more_forms
    needle = MORE_FORMS[form][1]
    assert H in needle and needle != MORE_VALUE
    found = corpus.where(needle)
    assert not found, f"{form} form of the secret found in: {found[:8]}"


# ---- the scanner itself ---------------------------------------------------------------------------------

PLANTED = f'planted-{H}"\\é\nsecond-line-{H}'


def test_the_scan_finds_a_planted_secret_in_every_kind_of_store(world) -> None:
    """Guard against a vacuous canary: a value planted in each kind of store is found there."""
    import io
    import tarfile

    clients = AwsClients(region=world["aws"].region)
    name = f"plant-{H}"
    clients.s3.create_bucket(Bucket=name)
    clients.s3.put_object(Bucket=name, Key="doc.json", Body=json.dumps({"v": PLANTED}).encode())
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        data = f"x={PLANTED}".encode()
        info = tarfile.TarInfo("inner/file.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    clients.s3.put_object(Bucket=name, Key="bundle.tar.gz", Body=archive.getvalue())
    clients.dynamodb.create_table(TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                                  AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                                  BillingMode="PAY_PER_REQUEST")
    clients.dynamodb.put_item(TableName=name, Item={"id": {"S": "x"}, "m": {"M": {"v": {"S": PLANTED}}}})
    queue = clients.sqs.create_queue(QueueName=name)["QueueUrl"]
    clients.sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"v": PLANTED}))
    machine = clients.sfn.create_state_machine(
        name=name, roleArn="arn:aws:iam::123456789012:role/x",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
    clients.sfn.start_execution(stateMachineArn=machine, input=json.dumps({"v": PLANTED}))
    corpus = Corpus().collect_aws(clients, only=name)
    found = {where.split(":", 1)[0] + ":" + where.split("/")[-1] for where, _ in corpus.find(forms(PLANTED))}
    for store in ("s3:", "dynamodb:", "sqs:", "sfn:"):
        assert any(f.startswith(store) for f in found), (store, found)
    assert any("inner/file.txt" in where for where, _ in corpus.find(forms(PLANTED)))
    assert any("doc.json" in where for where, _ in corpus.find([PLANTED]))  # found decoded inside the JSON


# ---- the canary --------------------------------------------------------------------------------------


class Records(logging.Handler):
    """Every log record of the engine's logger and the root logger, extras included."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(json.dumps({**record.__dict__, "msg": record.getMessage()}, default=str,
                                     ensure_ascii=False))


def pr_webhook(world: dict[str, Any], stack: EmbeddedStack | None = None) -> tuple[int, dict[str, Any]]:
    doc = json.loads((FIXTURES / "pull_request_opened.json").read_text())
    doc["pull_request"]["head"]["sha"] = world["sha"]
    doc["pull_request"]["head"]["repo"]["clone_url"] = f"file://{world['repo']}"
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "pull_request",
               "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sign(world["webhook_key"], body)}
    resp = (stack or world["stack"]).api.handle(proxy_event("POST", "/webhooks/github", body, headers), None)
    return int(resp["statusCode"]), json.loads(resp["body"])


def final_status(fake: FakeGitHub, sha: str, after: int = 0) -> dict[str, Any] | None:
    return next((s for s in fake.statuses[after:] if s["sha"] == sha and s["state"] != "pending"), None)


def test_a_pr_run_with_a_token_secret_of_any_name_succeeds(world) -> None:
    """Regression: a pull request's job names the GitHub token secret as its git source token. GitHubEvents
    validated it with the token added to allowed_exact, but Packager re-validated job.json with the plain
    policy, so whenever the token secret was not under an allowed secret prefix (the construct passes any
    user-provided secret's ARN) every PR run failed in packaging ('source.git.token: ... outside the
    allowed prefixes')."""
    seed = AwsClients(region=world["aws"].region)
    token_secret = f"github/canary-{H}-token"  # a user's own secret, as IacCiPipeline(github_token_secret=...) takes
    seed.secrets.create_secret(Name=token_secret, SecretString=GITHUB_TOKEN)
    fake = world["fake"]
    seen = len(fake.statuses)
    stack = EmbeddedStack(world["aws"], prefix="g" + secrets.token_hex(4),
                          settings_overrides={**world["overrides"], "github_token_secret_id": token_secret}).start()
    try:
        assert pr_webhook(world, stack)[0] == 202
        status = wait_for(lambda: final_status(fake, world["sha"], seen), what="the PR's final commit status")
    finally:
        stack.close()
    assert status["state"] == "success", [c["body"] for c in fake.comments.values()][-1]


def test_no_secret_in_anything_stored_or_printed(world, more_forms, capfd, caplog, tmp_path) -> None:
    caplog.set_level(logging.INFO)  # the level the functions log at (DEBUG would add botocore's wire dumps)
    records = Records()
    watched = [logging.getLogger(), logging.getLogger("iac-ci")]
    for lg in watched:
        lg.addHandler(records)
    stack, fake = world["stack"], world["fake"]
    gate = tmp_path / "go"
    try:
        code, body = stack.submit({"name": "canary", "orders": [
            {"name": "print-lambda", "target": "lambda", "secrets": SECRETS, "cmds": PRINT_EVERY_FORM},
            {"name": "print-codebuild", "target": "codebuild", "secrets": SECRETS, "cmds": PRINT_EVERY_FORM},
            {"name": "fail-with-secret", "must_succeed": False, "secrets": SECRETS, "cmds": FAIL_WITH_SECRET},
            # every form, then it waits while the test reads its live log through the API
            {"name": "print-live", "target": "lambda", "secrets": SECRETS, "env": {"GATE": str(gate)},
             "cmds": [*PRINT_EVERY_FORM, "echo", "echo live-gate-reached",
                      'while [ ! -e "$GATE" ]; do sleep 0.05; done']},
        ]})
        assert code == 202, body
        try:
            live_answers = read_live_log(stack, body["run_id"], "print-live", until="live-gate-reached")
        finally:
            gate.touch()
        done = stack.wait(body["run_id"], timeout=90)
        seen = len(fake.statuses)
        assert pr_webhook(world)[0] == 202
        status = wait_for(lambda: final_status(fake, world["sha"], seen), what="the PR's final commit status")
    finally:
        for lg in watched:
            lg.removeHandler(records)
    stack.close()  # the consumers stop, so what is left in the queues can be read
    world["closed"] = True

    # the commands really printed every form (masked), and the runs ended as designed
    assert done["status"] == "succeeded", done
    assert done["orders"]["fail-with-secret"]["status"] == "failed"
    assert status["state"] == "success", (status, [c["body"] for c in fake.comments.values()])
    s3 = AwsClients(region=stack.aws.region).s3
    live_text = "".join(a["text"] for a in live_answers)
    # printed live, masked live (and credentials in URLs redacted again by the route, as on the logs page)
    for marker in ("plain A=*** B=***", "https://***@git.example.com", "split:***", "\nA=***\n", "live-gate-reached"):
        assert marker in live_text, (marker, live_text[-3000:])
    assert live_answers[-1]["status"] == "running" and live_answers[-1]["source"] == "live"
    for order in ("print-lambda", "print-codebuild"):
        log = s3.get_object(Bucket=stack.settings.internal_bucket,
                            Key=layout.log_key(done["run_id"], order))["Body"].read().decode()
        for marker in ("plain A=*** B=***", "https://***@git.example.com", "token=***&x=1", "enc *** *** ***",
                       '{"A": "***", "B": "***", "C": "***"}', "multi-line:\n***", "on stderr A=*** C=***",
                       "split:***", "line truncated at 65536 bytes", "\nA=***\n", "\nC=***\n",
                       "last-without-newline:***"):
            assert marker in log, (order, marker, log[-3000:])
    pr_comment = "\n".join(c["body"] for c in fake.comments.values())
    assert "plan with E=***" in pr_comment, pr_comment[-2000:]

    clients = AwsClients(region=stack.aws.region)
    corpus = Corpus().collect_aws(clients)
    corpus.collect_files([stack.log_dir], "worker logs")
    leftovers = new_temp_entries(Path(tempfile.gettempdir()), world["started"], ("iac-ci-order-", "iac-ci-pkg-"))
    corpus.collect_files(leftovers, "leftover work files")
    for c in fake.comments.values():
        corpus.add(f"github comment {c['id']}", c["body"], "github comments")
    for s in fake.statuses:
        corpus.add(f"github status {s['id']}", json.dumps(s, ensure_ascii=False), "github statuses")
    for r in fake.requests:
        corpus.add(f"github {r.method} {r.path}", r.body, "github request bodies")
    out, err = capfd.readouterr()
    corpus.add("captured stdout", out, "captured streams")
    corpus.add("captured stderr", err, "captured streams")
    corpus.add("caplog", caplog.text, "captured logs")
    for i, text in enumerate(records.texts):
        corpus.add(f"log record {i}", text, "log records")
    for i, answer in enumerate(live_answers):  # the live log as the API served it, while the order ran
        corpus.add(f"live log answer {i}", json.dumps(answer), "live log answers")

    # the search is not vacuous: each kind of store was really read
    for kind in ("s3 object versions", "archive members", "dynamodb items", "sfn execution parts", "worker logs",
                 "github comments", "captured streams", "log records", "live log answers"):
        assert corpus.counts.get(kind, 0) > 0, (kind, corpus.counts)
    sops_files = 0
    for where, text in corpus.blobs:
        if "secrets.sops.json@" in where and "!" not in where:  # minted at dispatch; versions outlive the delete
            try:
                doc = json.loads(text)
            except ValueError:
                continue  # the decoded-leaves rendering of the same file
            sops_files += 1
            assert "sops" in doc and not sops_values_are_encrypted(doc), (where, sops_values_are_encrypted(doc))
    assert sops_files >= 4, "the minted sops files were not read"
    live_copies = [w for w, _ in corpus.blobs if layout.live_log_key(done["run_id"], "print-live") in w]
    assert live_copies, "the live log's uploads were not read"  # every version of it, searched like the rest

    leaks = {name: corpus.find(forms(value) | set(cores)) for name, (value, cores) in CANARIES.items()}
    assert not any(leaks.values()), {name: found[:10] for name, found in leaks.items() if found}
