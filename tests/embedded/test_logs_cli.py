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
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from click.testing import CliRunner
from support.paths import REPO_ROOT
from support.waiting import wait_for

from iac_ci.cli import logs as logs_cli
from iac_ci.cli.main import main
from iac_ci.embedded.http_api import HttpApi
from iac_ci.embedded.stack import EmbeddedStack
from iac_ci.remote.client import ApiClient
from lambda_runtime.intake import log_links, order_log, signature
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
    """A process's stdout (or ``stream``) read line by line on a thread, so a test can wait for a line
    while it runs."""

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        stdout = stream or proc.stdout
        assert stdout is not None

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
    token = "flw-" + secrets.token_hex(12)
    served.stack.clients.ssm.put_parameter(Name="/iac-ci/logs/follow-token", Value=token, Type="SecureString",
                                           Overwrite=True)  # as ``iac-ci serve --ssm NAME=VALUE`` seeds it
    run_id = submit(served, tmp_path, {"name": "stream", "orders": [{
        "name": "stream", "target": "lambda", "secrets": [{"env": "TOK", "ssm": "/iac-ci/logs/follow-token"}],
        "cmds": ["echo first-line", 'echo "the token is $TOK"',
                 # the value in two pieces, seconds apart: the worker masks whole lines, so it never shows
                 'printf \'split %s\' "${TOK:0:5}"; sleep 3; printf \'%s\\n\' "${TOK:5}"',
                 f"while [ ! -e {gate} ]; do sleep 0.05; done", "echo second-line"]}]})
    proc = subprocess.Popen(["iac-ci", "logs", run_id, "stream", "--follow", *served.target], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        lines = Lines(proc)
        began = time.monotonic()
        wait_for(lambda: "first-line\n" in lines.text(), timeout=60, poll=0.05, what="the first line, live")
        seen_after = time.monotonic() - began
        wait_for(lambda: "split ***\n" in lines.text(), timeout=60, poll=0.05, what="the split secret, live")
        # the order is still blocked on the gate: what the follower printed came from the live log
        assert not gate.exists() and proc.poll() is None
        code, status = served.stack.status(run_id)
        assert code == 200 and status["orders"]["stream"]["status"] == "running"
        live = lines.text()
        assert "second-line" not in live
        assert "the token is ***\n" in live and "split ***\n" in live
        assert token not in live and token[5:] not in live
        gate.touch()
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = lines.text()
    assert out == final_log(served, run_id, "stream")  # every byte once: live, then the final log from there
    assert token not in out and token[5:] not in out
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


def prefixed(order: str, text: str) -> str:
    """``text`` as ``--prefix`` prints it: each line after ``[ORDER] ``, the last one ended."""
    return "".join(f"[{order}] {line}\n" for line in text.splitlines())


def own_lines(printed: list[str], order: str) -> list[str]:
    """The lines printed for ``order`` under ``--prefix``, in the order printed, without the prefix."""
    return [line.removeprefix(f"[{order}] ") for line in printed if line.startswith(f"[{order}] ")]


def test_follow_prefix_prints_parallel_orders_as_their_lines_come(served: Served, tmp_path: Path) -> None:
    """Two orders side by side: ``a`` prints a line, then waits at a gate the test opens only once the
    follower has printed all of ``b``'s lines (b prints them 1.5 s apart). Followed one order after
    the other, ``b`` would show only after ``a`` ended, and the gate would never open."""
    release = tmp_path / "release"
    run_id = submit(served, tmp_path, {"name": "side-by-side", "orders": [
        {"name": "a", "target": "lambda",
         "cmds": ["echo a-1", f"while [ ! -e {release} ]; do sleep 0.05; done", "echo a-2"]},
        {"name": "b", "target": "lambda", "cmds": ["echo b-1", "sleep 1.5", "echo b-2", "sleep 1.5", "echo b-3"]}]})
    proc = subprocess.Popen(["iac-ci", "logs", run_id, "--follow", "--prefix", *served.target],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        lines = Lines(proc)
        wait_for(lambda: "[a] a-1\n" in (seen := lines.text()) and "[b] b-3\n" in seen, timeout=90, poll=0.05,
                 what="a's first line and all of b's, while a runs")
        assert not release.exists() and proc.poll() is None  # a is still held at its gate
        code, status = served.stack.status(run_id)
        assert code == 200 and status["orders"]["a"]["status"] == "running"
        assert "[a] a-2\n" not in lines.text()
        release.touch()
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = lines.text()
    printed = out.splitlines()
    assert all(line.startswith(("[a] ", "[b] ")) for line in printed), out  # no headers, no line cut in two
    assert printed.index("[b] b-1") < printed.index("[b] b-3") < printed.index("[a] a-2")
    for order in ("a", "b"):  # every line once, in its own order
        assert own_lines(printed, order) == final_log(served, run_id, order).splitlines(), order
    assert f"run {run_id}: succeeded" in stderr and "order a:" not in stderr  # the run's table, as without --prefix


def test_prefix_without_follow_on_a_finished_run(served: Served, tmp_path: Path) -> None:
    run_id = submit(served, tmp_path, {"name": "prefixed", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["echo a-out"]},
        {"name": "b", "target": "lambda", "depends_on": ["a"], "cmds": ["echo b-out", "exit 4"]},
        {"name": "c", "target": "lambda", "depends_on": ["b"], "cmds": ["echo never"]}]})
    assert served.stack.wait(run_id, timeout=60)["status"] == "failed"
    whole = cli("logs", run_id, "--prefix", *served.target)
    assert whole.returncode == 1, whole.stderr[-2000:]  # the run's outcome: b failed
    logs = {order: final_log(served, run_id, order) for order in ("a", "b")}
    assert whole.stdout == (prefixed("a", logs["a"]) + prefixed("b", logs["b"])
                            + "[c] (no log: the order is skipped; it did not run)\n")  # in execution order
    assert f"run {run_id}: failed" in whole.stderr and "skipped" in whole.stderr
    one = cli("logs", run_id, "b", "--prefix", *served.target)  # with ORDER: that order's lines, prefixed
    assert one.returncode == 1 and "order b: failed (exit code 4)" in one.stderr
    assert one.stdout == prefixed("b", logs["b"]) and "[b] b-out\n" in one.stdout


def test_prefix_keeps_a_line_whole_across_answers(served: Served, tmp_path: Path) -> None:
    """A line longer than one answer holds comes in pieces (the route cuts it), and a final log's last
    line may lack its end: ``--prefix`` still prints each line once, whole, after one prefix."""
    run_id = submit(served, tmp_path, {"name": "long-line", "orders": [{"name": "long", "target": "lambda",
                                                                         "cmds": ["true"]}]})
    assert served.stack.wait(run_id, timeout=60)["status"] == "succeeded"
    long_line = "x" * (order_log.MAX_CHUNK_BYTES + order_log.LONG_LINE_BYTES)
    stored = f"first\n{long_line}\nno line end"
    served.stack.clients.s3.put_object(Bucket=served.stack.settings.internal_bucket,
                                       Key=layout.log_key(run_id, "long"), Body=stored.encode())
    code, body = client(served).log(run_id, "long", len(b"first\n"))
    assert code == 200 and body["text"] == "x" * order_log.MAX_CHUNK_BYTES  # the route cuts the line
    expected = f"[long] first\n[long] {long_line}\n[long] no line end\n"
    for args in (("long",), (), ("--follow",)):  # one order; the run in turn; the run followed, side by side
        proc = cli("logs", run_id, *args, "--prefix", *served.target)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert proc.stdout == expected, (args, proc.stdout[:200], proc.stdout[-200:])


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


# ---- credentials: redacted in every copy, and no read from inside a line --------------------------

GITHUB_TOKEN = "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8Ba7"
PASSWORD = "hunter22secret"
CREDENTIAL_URL = f"https://deployer:{PASSWORD}@git.example.com/acme/infra.git"


def client(served: Served) -> ApiClient:
    return ApiClient(served.url, served.secret)


def attack_offsets(log: str) -> list[int]:
    """Byte offsets inside the token's line and inside the URL's ``user:password``, as a stored log
    written before the worker redacted them would hold them: from there, neither has its shape."""
    raw = log.encode()
    token_at = raw.index(b"token ") + len(b"token ")
    url_at = raw.index(b"https://") + len(b"https://")
    return [token_at, token_at + 1, url_at, url_at + len(b"deployer:")]


def test_credentials_are_redacted_in_every_copy_of_the_log(served: Served, tmp_path: Path) -> None:
    """The final log, the live log and the worker's own stream (the CodeBuild console; CloudWatch on
    Lambda) are written redacted, so no offset into any of them reaches a credential."""
    gate = tmp_path / "release"
    run_id = submit(served, tmp_path, {"name": "creds", "orders": [{"name": "leak", "target": "codebuild", "cmds": [
        f"echo 'token {GITHUB_TOKEN} and more'", f"echo 'cloning {CREDENTIAL_URL}'",
        f"while [ ! -e {gate} ]; do sleep 0.05; done"]}]})
    live = wait_for(lambda: (text := live_log(served, run_id, "leak")) and "cloning" in text and text,
                    timeout=60, what="the live log")
    gate.touch()
    assert served.stack.wait(run_id, timeout=60)["status"] == "succeeded"
    stream = (served.stack.log_dir / f"{run_id}-leak.out").read_text()
    final = final_log(served, run_id, "leak")
    for where, text in (("live", live), ("final", final), ("stream", stream)):
        assert GITHUB_TOKEN[1:] not in text and PASSWORD not in text and "deployer" not in text, where
        assert "token *** and more\n" in text and "cloning https://***@git.example.com/acme/infra.git\n" in text, where
    code, body = client(served).log(run_id, "leak", 0)
    assert code == 200 and body["text"] == final


def test_a_read_from_inside_a_line_is_refused(served: Served, tmp_path: Path) -> None:
    """The attack: a signed request whose offset lies inside a credential, so what the route reads no
    longer has its shape. Against a log stored unredacted (as a worker before this one wrote it)."""
    run_id = submit(served, tmp_path, {"name": "old-log", "orders": [{"name": "leak", "target": "lambda",
                                                                       "cmds": ["true"]}]})
    assert served.stack.wait(run_id, timeout=60)["status"] == "succeeded"
    stored = f"header\ntoken {GITHUB_TOKEN} and more\ncloning {CREDENTIAL_URL}\n"
    served.stack.clients.s3.put_object(Bucket=served.stack.settings.internal_bucket,
                                       Key=layout.log_key(run_id, "leak"), Body=stored.encode())
    api = client(served)
    for offset in attack_offsets(stored):
        code, body = api.log(run_id, "leak", offset)
        assert code == 400 and body["problems"] == [order_log.NOT_A_LINE_START], (offset, body)
        assert GITHUB_TOKEN[1:] not in json.dumps(body) and PASSWORD not in json.dumps(body)
    code, body = api.log(run_id, "leak", len(b"header\n"))  # a line start: read, and redacted again here
    assert code == 200 and body["text"] == ("token *** and more\n"
                                            "cloning https://***@git.example.com/acme/infra.git\n")
    proc = subprocess.run(["iac-ci", "logs", run_id, "leak", *served.target], capture_output=True, text=True,
                          timeout=120, env=cli_env())
    assert proc.returncode == 0 and proc.stdout == "header\n" + body["text"], proc.stderr  # asks line starts only


# ---- following through an outage ------------------------------------------------------------------------


class FlakyProxy:
    """A real HTTP server in front of the API that forwards each request, or, while ``mode`` says so,
    answers 503 (``"503"``) or closes the connection without an answer (``"drop"``)."""

    def __init__(self, upstream: str) -> None:
        self.mode: str | None = None
        self.failed = 0
        self.answered: list[tuple[str, dict[str, Any]]] = []  # each forwarded request answered 200: path, body
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mode = proxy.mode
                if mode is not None:
                    proxy.failed += 1
                    if mode == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self._answer(503, b'{"message": "Service Unavailable"}')
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                try:
                    with urllib.request.urlopen(urllib.request.Request(upstream + self.path, headers=headers),
                                                timeout=30) as resp:
                        body = resp.read()
                        proxy.answered.append((self.path, json.loads(body)))
                        self._answer(resp.status, body)
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def follow_through_an_outage(served: Served, proxy: FlakyProxy, gate: Path, args: list[str],
                             first: Callable[[str], bool], *, drop: bool) -> tuple[str, str]:
    """``iac-ci logs ARGS --follow`` through ``proxy``: once ``first`` holds for what it printed, the API
    answers 503 (and, with ``drop``, then closes connections unanswered) until the follower has tried
    again through it; then the API is back, ``gate`` lets the orders end, and the follower must exit 0.
    Returns its stdout and its stderr with rich's line wrapping undone; the outage must be told once."""
    proc = subprocess.Popen(["iac-ci", "logs", *args, "--follow", "--url", proxy.url, "--secret", served.secret],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        out, err = Lines(proc), Lines(proc, proc.stderr)
        wait_for(lambda: first(out.text()), timeout=60, poll=0.05, what="the first lines, live")
        proxy.mode = "503"  # the client's own retries are spent first: then the follower's patience
        wait_for(lambda: "the API is unreachable" in err.text(), timeout=60, what="the outage noticed")
        failed = proxy.failed
        wait_for(lambda: proxy.failed > failed, timeout=60, what="another try through the outage")
        if drop:
            proxy.mode = "drop"  # and a network failure: the connection closed without an answer
            failed = proxy.failed
            wait_for(lambda: proxy.failed > failed, timeout=60, what="a try met by a dropped connection")
        assert proc.poll() is None  # still following
        proxy.mode = None
        wait_for(lambda: "the API is back" in err.text(), timeout=60, what="the API back")
        gate.touch()
        assert proc.wait(timeout=60) == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()
    stderr = " ".join(err.text().split())  # rich wraps long lines
    assert stderr.count("the API is unreachable") == 1 and stderr.count("the API is back") == 1, stderr
    return out.text(), stderr


def test_logs_follow_rides_out_an_outage(served: Served, tmp_path: Path) -> None:
    gate = tmp_path / "release"
    run_id = submit(served, tmp_path, {"name": "outage", "orders": [{"name": "o", "target": "lambda", "cmds": [
        "echo before-outage", f"while [ ! -e {gate} ]; do sleep 0.05; done", "echo after-outage"]}]})
    out, stderr = follow_through_an_outage(served, FlakyProxy(served.url), gate, [run_id, "o"],
                                           lambda seen: "before-outage\n" in seen, drop=True)
    assert "HTTP 503" in stderr and "order o: succeeded (exit code 0)" in stderr
    assert out == final_log(served, run_id, "o")  # nothing lost, nothing twice
    assert out.splitlines().count("after-outage") == 1  # (the announced command holds it too)


WAITING = ("queued", "awaiting_approval")  # an order that has not started: it has no log yet
Round = tuple[dict[str, str], list[tuple[str, bool]]]  # each order's status, then the log reads: (order, complete)


def follower_rounds(answered: list[tuple[str, dict[str, Any]]]) -> list[Round]:
    """The side-by-side follower's requests (as the proxy answered them), round by round: the run's
    status a round starts with (each order's status) and the log reads that followed (order, complete)."""
    rounds: list[Round] = []
    for path, body in answered:
        where = urlsplit(path)
        if where.path.endswith("/log"):
            rounds[-1][1].append((parse_qs(where.query)["order"][0], bool(body["complete"])))
        else:
            rounds.append(({name: order["status"] for name, order in (body.get("orders") or {}).items()}, []))
    return rounds


def assert_each_round_asks_the_started_open_orders(rounds: list[Round]) -> None:
    """One status a round, then one log read for each order that has started and whose log is not
    complete, in execution order: none for an order still queued, none once its log is complete."""
    complete: set[str] = set()
    for statuses, reads in rounds:
        expected = [name for name, status in statuses.items() if status not in WAITING and name not in complete]
        assert [order for order, _ in reads] == expected, (statuses, reads)
        complete |= {order for order, done in reads if done}
    assert rounds and complete == set(rounds[-1][0]), rounds[-3:]  # every log read to its end


def test_follow_prefix_rides_out_an_outage_asking_each_order_once_a_round(served: Served, tmp_path: Path) -> None:
    """The side-by-side follower reads through the same patience; and each round it reads the run's
    status once and asks each started, open order once, in execution order, and an order no more
    once its log is complete."""
    gate = tmp_path / "release"
    run_id = submit(served, tmp_path, {"name": "outage-both", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["echo a-before", f"while [ ! -e {gate} ]; do sleep 0.05; done",
                                                   "echo a-after"]},
        {"name": "b", "target": "lambda", "cmds": ["echo b-before", f"while [ ! -e {gate} ]; do sleep 0.05; done",
                                                   "sleep 2", "echo b-after"]}]})
    proxy = FlakyProxy(served.url)
    out, stderr = follow_through_an_outage(
        served, proxy, gate, [run_id, "--prefix"],
        lambda seen: "[a] a-before\n" in seen and "[b] b-before\n" in seen, drop=False)
    assert f"run {run_id}: succeeded" in stderr
    printed = out.splitlines()
    for order in ("a", "b"):  # nothing lost, nothing twice
        assert own_lines(printed, order) == final_log(served, run_id, order).splitlines(), order
    rounds = follower_rounds(proxy.answered)
    assert_each_round_asks_the_started_open_orders(rounds)
    assert any([order for order, _ in reads] == ["a", "b"] for _, reads in rounds), rounds  # side by side
    reads = [read for _, round_reads in rounds for read in round_reads]
    first_done = next(i for i, (_, complete) in enumerate(reads) if complete)
    asked = [order for order, _ in reads]
    remaining = {"a": "b", "b": "a"}[asked[first_done]]
    assert len(asked) > first_done + 1, asked  # (b sleeps 2 s after the gate: asked on alone)
    assert asked[first_done + 1:] == [remaining] * (len(asked) - first_done - 1), asked  # the done one: not again
    assert reads[-1] == (remaining, True)


def test_follow_prefix_asks_nothing_of_an_order_queued_behind_another(served: Served, tmp_path: Path) -> None:
    """``b`` waits for ``a``, which waits at a gate: round after round the follower reads the run's
    status and ``a``'s log, and asks nothing of ``b`` until ``b`` has started."""
    gate = tmp_path / "release"
    run_id = submit(served, tmp_path, {"name": "queued-behind", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["echo a-1", f"while [ ! -e {gate} ]; do sleep 0.05; done"]},
        {"name": "b", "target": "lambda", "depends_on": ["a"], "cmds": ["echo b-1"]}]})
    proxy = FlakyProxy(served.url)
    proc = subprocess.Popen(["iac-ci", "logs", run_id, "--follow", "--prefix", "--url", proxy.url,
                             "--secret", served.secret],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        out, err = Lines(proc), Lines(proc, proc.stderr)
        wait_for(lambda: "[a] a-1\n" in out.text(), timeout=60, poll=0.05, what="a's first line, live")
        began = len(follower_rounds(list(proxy.answered)))
        wait_for(lambda: len(follower_rounds(list(proxy.answered))) >= began + 3, timeout=60,
                 what="three more rounds while a is held at its gate")
        held = follower_rounds(list(proxy.answered))
        assert not gate.exists() and proc.poll() is None
        gate.touch()
        assert proc.wait(timeout=60) == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()
    while_held = [reads for statuses, reads in held if statuses.get("b") == "queued"]
    assert len(while_held) >= 3 and all(order != "b" for reads in while_held for order, _ in reads), held
    rounds = follower_rounds(proxy.answered)
    assert_each_round_asks_the_started_open_orders(rounds)
    first_read = next(statuses["b"] for statuses, reads in rounds if any(order == "b" for order, _ in reads))
    assert first_read not in WAITING, rounds  # asked once it had started: running, or already over
    printed = out.text().splitlines()
    for order in ("a", "b"):  # nothing lost, nothing twice
        assert own_lines(printed, order) == final_log(served, run_id, order).splitlines(), order
    assert f"run {run_id}: succeeded" in " ".join(err.text().split())


def test_logs_follow_gives_up_after_a_bounded_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on: every connection is refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(logs_cli, "OUTAGE_LIMIT_SECONDS", 2.0)  # OUTAGE_LIMIT_SECONDS: 10 minutes
    began = time.monotonic()
    proc = cli("logs", "0123456789abcdef", "a", "--follow", "--url", closed, "--secret", "s")
    stderr = " ".join(proc.stderr.split())
    assert proc.returncode == 1, stderr
    assert stderr.count("the API is unreachable (cannot reach") == 1 and "trying again for up to 2 s" in stderr
    assert "giving up" in stderr and "the API is back" not in stderr
    assert time.monotonic() - began < 60
    once = cli("logs", "0123456789abcdef", "a", "--url", closed, "--secret", "s")  # not following: no patience
    assert once.returncode == 1 and "cannot reach" in once.stderr and "trying again" not in once.stderr


# ---- expired runs ----------------------------------------------------------------------------------


def page(url: str) -> tuple[int, str, str]:
    """A log link opened as a browser opens it: status, content type and text."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_an_expired_run_is_answered_plainly(served: Served, tmp_path: Path) -> None:
    stack = served.stack
    run_id = submit(served, tmp_path, {"name": "old", "orders": [{"name": "a", "target": "lambda",
                                                                   "cmds": ["echo old"]},
                                                                  {"name": "b", "target": "lambda",
                                                                   "cmds": ["echo older"]}]})
    assert stack.wait(run_id, timeout=60)["status"] == "succeeded"
    ddb, table = stack.clients.dynamodb, stack.settings.orders_table
    run_key = {"run_id": value(run_id), "sk": value(RUN_SK)}
    order_keys = [{"run_id": value(run_id), "sk": value(order_sk(name))} for name in ("a", "b")]
    # the engine's own finalize wrote the TTL: one day after the run ended, on the run and every order
    run_item = ddb.get_item(TableName=table, Key=run_key, ConsistentRead=True)["Item"]
    ttl = int(float(run_item["finished_at"]["N"])) + 86400
    assert int(run_item["expire_at"]["N"]) == ttl
    for key in order_keys:
        assert int(ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]["expire_at"]["N"]) == ttl
    link = log_links.link(served.url, stack.secret(stack.settings.log_link_secret_id), run_id,
                          expires_at=int(time.time()) + 3600)
    assert page(link)[0] == 200  # the PR's link, while the run is kept
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
    code, content_type, text = page(link)  # the same link, now: said as status says it, not the logs
    assert code == 410 and content_type.startswith("text/plain") and text == f"{body['error']}\n"
    assert "old\n" not in text

    # DynamoDB deletes the items (eventually): the run's events, kept far longer, still tell
    ddb.delete_item(TableName=table, Key=run_key)
    for key in order_keys:
        ddb.delete_item(TableName=table, Key=key)
    gone = cli("status", run_id, *served.target)
    assert gone.returncode == 2 and f"run {run_id} ended on {day}" in " ".join(gone.stderr.split())
    code, body = stack.status(run_id)
    assert code == 410 and body["ended_at"] == pytest.approx(float(ended), abs=2)
    code, _, text = page(link)  # not "not found"
    assert code == 410 and text == f"{body['error']}\n" and f"run {run_id} ended on {day}" in text
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
