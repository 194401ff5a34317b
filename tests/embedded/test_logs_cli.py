"""``iac-ci logs`` (and ``submit``/``status``/``cancel`` against a local API), run as a user runs them:
the real CLI in a subprocess, over real HTTP, against the engine's API on the embedded AWS. The
workers are real processes publishing their live log through a presigned PUT; nothing is mocked.

The stack is served in this process (``HttpApi``), so a test can reach into its tables to make a run
expire; the README's commands run against a real ``iac-ci serve`` (``test_the_readme_commands_run``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.paths import REPO_ROOT
from support.waiting import wait_for

from iac_ci.cli.main import main
from iac_ci.embedded.http_api import HttpApi
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.intake import order_log, signature
from lambda_runtime.schema import deployment, layout
from lambda_runtime.schema.records import RUN_SK, order_sk
from lambda_runtime.store.codec import value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@dataclass
class Served:
    stack: EmbeddedStack
    url: str
    secret: str

    @property
    def target(self) -> tuple[str, ...]:
        return ("--url", self.url, "--secret", self.secret)


@pytest.fixture(scope="module")
def served(aws) -> Iterator[Served]:
    stack = EmbeddedStack(aws, prefix="l" + secrets.token_hex(4), settings_overrides={"watchdog_grace_seconds": 5})
    with stack, HttpApi(stack.api) as http:
        yield Served(stack, http.url, stack.webhook_secret)


def cli_env() -> dict[str, str]:
    """What a user's shell has: no AWS endpoint of ours (the --url target needs none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("MOTO_PORT",)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Ran:
    """The ``iac-ci`` command's own code, in this process (a process start costs seconds on a busy CI
    machine); over real HTTP all the same. The streaming test and the README's run the real process."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def submit(served: Served, tmp_path: Path, job: dict[str, Any]) -> str:
    path = tmp_path / f"{job['name']}.yaml"
    path.write_text(yaml.safe_dump(job))
    proc = cli("submit", str(path), *served.target, "--no-wait")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def final_log(served: Served, run_id: str, order: str) -> str:
    obj = served.stack.clients.s3.get_object(Bucket=served.stack.settings.internal_bucket,
                                             Key=layout.log_key(run_id, order))
    return obj["Body"].read().decode()


def live_log(served: Served, run_id: str, order: str) -> str:
    try:
        obj = served.stack.clients.s3.get_object(Bucket=served.stack.settings.internal_bucket,
                                                 Key=layout.live_log_key(run_id, order))
    except served.stack.clients.s3.exceptions.NoSuchKey:
        return ""
    return obj["Body"].read().decode()


class Lines:
    """A process's stdout read line by line on a thread, so a test can wait for a line while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def read() -> None:
            for line in stdout:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=read, daemon=True).start()

    def text(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return "".join(self.seen)
            if line is not None:
                self.seen.append(line)


# ---- following a running order -------------------------------------------------------------------


def test_logs_follow_streams_a_running_order(served: Served, tmp_path: Path) -> None:
    gate = tmp_path / "release"
    run_id = submit(served, tmp_path, {"name": "stream", "orders": [{"name": "stream", "target": "lambda", "cmds": [
        "echo first-line", f"while [ ! -e {gate} ]; do sleep 0.05; done", "echo second-line"]}]})
    proc = subprocess.Popen(["iac-ci", "logs", run_id, "stream", "--follow", *served.target], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        lines = Lines(proc)
        began = time.monotonic()
        wait_for(lambda: "first-line\n" in lines.text(), timeout=60, poll=0.05, what="the first line, live")
        seen_after = time.monotonic() - began
        # the order is still blocked on the gate: what the follower printed came from the live log
        assert not gate.exists() and proc.poll() is None
        code, status = served.stack.status(run_id)
        assert code == 200 and status["orders"]["stream"]["status"] == "running"
        assert "second-line" not in lines.text()
        gate.touch()
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = lines.text()
    assert out == final_log(served, run_id, "stream")  # every byte once: live, then the final log from there
    lines_out = out.splitlines()  # output lines (the announced commands hold the same words)
    assert lines_out.count("first-line") == 1 and lines_out.count("second-line") == 1
    assert out.endswith("order succeeded\n")
    assert "order stream: succeeded (exit code 0)" in stderr
    print(f"first line seen {seen_after:.1f}s after the follower started")


def test_a_whole_run_in_execution_order_and_its_outcome(served: Served, tmp_path: Path) -> None:
    run_id = submit(served, tmp_path, {"name": "whole", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["echo a-out"]},
        {"name": "b", "target": "lambda", "depends_on": ["a"], "cmds": ["echo b-out", "exit 4"]},
        {"name": "c", "target": "lambda", "depends_on": ["b"], "cmds": ["echo never"]},
        {"name": "d", "target": "lambda", "drift": True, "cmds": ["echo changes", "exit 2"]},
    ]})
    followed = cli("logs", run_id, "--follow", *served.target)  # from acceptance to the end of the run
    assert followed.returncode == 1, followed.stderr[-2000:]  # the run failed: b did
    out = followed.stdout
    headers = re.findall(r"^==> (\S+) <==$", out, re.MULTILINE)
    assert headers == ["a", "d", "b", "c"]  # layer by layer, by name within one
    sections = dict(zip(headers, re.split(r"^==> \S+ <==\n", out, flags=re.MULTILINE)[1:], strict=True))
    assert sections["a"].rstrip("\n") + "\n" == final_log(served, run_id, "a")
    assert "b-out" in sections["b"] and "a command exited with code 4" in sections["b"]
    assert sections["c"] == "(no log: the order is skipped; it did not run)\n"
    assert f"run {run_id}: failed" in followed.stderr and "skipped" in followed.stderr  # the orders table
    again = cli("logs", run_id, *served.target)  # a final run without --follow: the same, at once
    assert again.returncode == 1 and again.stdout == out
    for order, code, status in (("a", 0, "succeeded (exit code 0)"), ("b", 1, "failed (exit code 4)"),
                                ("c", 1, "skipped"), ("d", 3, "drifted (exit code 2)")):
        one = cli("logs", run_id, order, *served.target)
        assert one.returncode == code and f"order {order}: {status}" in one.stderr, (order, one.stderr)
        assert one.stdout == ("" if order == "c" else final_log(served, run_id, order))


def test_bad_input_unknown_runs_and_orders_exit_2(served: Served, tmp_path: Path) -> None:
    run_id = submit(served, tmp_path, {"name": "known", "orders": [{"name": "a", "target": "lambda",
                                                                     "cmds": ["true"]}]})
    served.stack.wait(run_id, timeout=60)
    cases = {
        ("logs", run_id, "nope"): f"run '{run_id}' has no order 'nope'",
        ("logs", "0123456789abcdef"): "run '0123456789abcdef' not found",
        ("logs", "0123456789abcdef", "a"): "run '0123456789abcdef' not found",
        ("logs", run_id, "../etc"): "order: not an order name",
        ("logs", "not/a/run"): "RUN_ID",
        ("status", "0123456789abcdef"): "not found",
    }
    for args, message in cases.items():
        proc = cli(*args, *served.target)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-1000:])
    neither = cli("logs", run_id)
    assert neither.returncode == 2 and "give either --stack" in neither.stderr
    both = cli("logs", run_id, "--stack", "s", "--url", served.url)
    assert both.returncode == 2 and "give either --stack" in both.stderr
    wrong = cli("logs", run_id, "a", "--url", served.url, "--secret", "wrong")
    assert wrong.returncode == 1 and "401" in wrong.stderr


def test_submit_status_and_cancel_take_a_local_api(served: Served, tmp_path: Path) -> None:
    gate = tmp_path / "never"
    run_id = submit(served, tmp_path, {"name": "cancel-me", "orders": [
        {"name": "wait", "target": "codebuild",
         "cmds": ["echo waiting", f"while [ ! -e {gate} ]; do sleep 0.1; done"]}]})
    wait_for(lambda: "waiting\n" in live_log(served, run_id, "wait"), timeout=60, what="the order's live log")
    status = cli("status", run_id, *served.target, "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["orders"]["wait"]["status"] == "running"
    assert cli("cancel", run_id, *served.target).returncode == 0
    assert served.stack.wait(run_id, timeout=60)["status"] == "cancelled"
    assert cli("status", run_id, *served.target).returncode == 1
    # the stopped worker still uploads its log: a follower gets it whole, up to the note of its stop
    follow = cli("logs", run_id, "wait", "--follow", *served.target)
    assert follow.returncode == 1 and "order wait: cancelled" in follow.stderr
    assert follow.stdout == final_log(served, run_id, "wait") and "waiting\n" in follow.stdout


# ---- the signature binds the query ---------------------------------------------------------------


def test_a_signed_log_request_reads_only_the_order_and_offset_it_was_signed_for(served: Served,
                                                                                 tmp_path: Path) -> None:
    run_id = submit(served, tmp_path, {"name": "bound", "orders": [
        {"name": "public", "target": "lambda", "cmds": ["echo public"]},
        {"name": "private", "target": "lambda", "cmds": ["echo private-output"]}]})
    served.stack.wait(run_id, timeout=60)

    def get(path_and_query: str, signed_for: str) -> tuple[int, dict[str, Any]]:
        headers = signature.signed_headers(served.secret, "GET", signed_for, None, time.time())
        try:
            with urllib.request.urlopen(urllib.request.Request(served.url + path_and_query, headers=headers)) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    signed_for = order_log.signed_path(run_id, "public", "0")
    code, body = get(signed_for, signed_for)
    assert code == 200 and body["text"].endswith("order succeeded\n")
    # the captured request, pointed at another order, or read from another offset: refused
    for query in ("order=private&offset=0", "offset=0&order=private", "order=public&offset=5", "order=private"):
        code, body = get(f"/runs/{run_id}/log?{query}", signed_for)
        assert code == 401 and body == {"error": "bad or missing signature"}, query
    # the same values in another order and encoding are the same request
    code, _ = get(f"/runs/{run_id}/log?offset=0&order=%70ublic", signed_for)
    assert code == 200


# ---- expired runs ----------------------------------------------------------------------------------


def test_an_expired_run_is_answered_plainly(served: Served, tmp_path: Path) -> None:
    stack = served.stack
    run_id = submit(served, tmp_path, {"name": "old", "orders": [{"name": "a", "target": "lambda",
                                                                   "cmds": ["echo old"]}]})
    assert stack.wait(run_id, timeout=60)["status"] == "succeeded"
    ddb, table = stack.clients.dynamodb, stack.settings.orders_table
    run_key = {"run_id": value(run_id), "sk": value(RUN_SK)}
    # the TTL the engine writes when the run ends, already past (moto never deletes by TTL)
    now = time.time()
    ddb.update_item(TableName=table, Key=run_key, UpdateExpression="SET expire_at = :e",
                    ExpressionAttributeValues={":e": value(int(now) - 60)})
    ended = ddb.get_item(TableName=table, Key=run_key)["Item"]["finished_at"]["N"]
    day = time.strftime("%Y-%m-%d", time.gmtime(float(ended)))
    status = cli("status", run_id, *served.target)
    assert status.returncode == 2, status.stderr
    message = " ".join(status.stderr.split())  # rich wraps long lines
    assert re.search(rf"run {run_id} ended on {day} \d\d:\d\d UTC and expired on \d{{4}}-\d\d-\d\d \d\d:\d\d UTC "
                     r"\(runs are kept 1 day after they end\)", message), message
    logs = cli("logs", run_id, "a", *served.target)
    assert logs.returncode == 2 and f"run {run_id} ended on {day}" in " ".join(logs.stderr.split())
    code, body = stack.status(run_id)
    assert code == 410 and body["expired"] is True and body["expire_at"] == int(now) - 60

    # DynamoDB deletes the items (eventually): the run's events, kept far longer, still tell
    ddb.delete_item(TableName=table, Key=run_key)
    ddb.delete_item(TableName=table, Key={"run_id": value(run_id), "sk": value(order_sk("a"))})
    gone = cli("status", run_id, *served.target)
    assert gone.returncode == 2 and f"run {run_id} ended on {day}" in " ".join(gone.stderr.split())
    code, body = stack.status(run_id)
    assert code == 410 and body["ended_at"] == pytest.approx(float(ended), abs=2)
    # a run never seen has neither items nor events: still a 404
    assert stack.status("0123456789abcdef")[0] == 404


# ---- a deployed stack --------------------------------------------------------------------------------


def test_logs_of_a_deployed_stack(served: Served, clients, tmp_path: Path) -> None:
    """``--stack``: found through its CloudFormation outputs, its secret read with the caller's credentials."""
    run_id = submit(served, tmp_path, {"name": "deployed", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["echo from-the-stack"]}]})
    name = "iac-ci-logs-" + secrets.token_hex(3)
    clients.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps({
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {deployment.OUTPUT_API_URL: {"Value": served.url + "/"},
                    deployment.OUTPUT_WEBHOOK_SECRET_ARN: {"Value": served.stack.settings.webhook_secret_id}}}))
    proc = cli("logs", run_id, "a", "--follow", "--stack", name)  # this process's AWS is the embedded one
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "from-the-stack\n" in proc.stdout and proc.stdout == final_log(served, run_id, "a")


# ---- the README's commands -----------------------------------------------------------------------------


def readme_commands() -> list[str]:
    """The command lines of the README's "Reading logs" block, comments removed."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Reading logs")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_commands_run(tmp_path: Path) -> None:
    """Against a real ``iac-ci serve`` (its own embedded AWS), as the README says to type them."""
    commands = readme_commands()
    serve_line, export_line, *rest = commands
    assert serve_line.startswith("iac-ci serve ") and export_line.startswith("export IAC_CI_API_SECRET=")
    env = cli_env()
    serve = subprocess.Popen([*shlex.split(serve_line.replace("--port 8080", "--port 0"))], stdout=subprocess.PIPE,
                             stderr=(tmp_path / "serve.err").open("w"), text=True, env=env, cwd=REPO_ROOT)
    try:
        url = serve.stdout.readline().strip() if serve.stdout else ""
        assert url.startswith("http://"), (tmp_path / "serve.err").read_text()[-2000:]
        found = re.search(r"job signing secret \(X-IacCi-Signature-256\): (\S+)", (tmp_path / "serve.err").read_text())
        assert found is not None
        env["IAC_CI_API_SECRET"] = found.group(1)
        run_id = ""
        outputs = []
        for line in rest:
            if "--stack" in line:
                continue  # needs a deployed stack: test_logs_of_a_deployed_stack
            args = shlex.split(line.replace("http://127.0.0.1:8080", url).replace("RUN_ID", run_id))
            assert args[0] == "iac-ci", line
            proc = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env, cwd=REPO_ROOT)
            assert proc.returncode == 0, (line, proc.stderr[-2000:])
            if args[1] == "submit":
                run_id = proc.stdout.strip()
            outputs.append((args, proc))
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(timeout=10)
    printed = "\n".join(p.stdout + p.stderr for _, p in outputs)
    assert "deploying demo-app to dev with token ***" in printed
    assert "demo-s3cr3t-token" not in printed  # the order printed its secret: masked in every log
    assert any(a[1] == "logs" and "==> deploy-dev <==" in p.stdout for a, p in outputs)
