"""The worker against real boundaries: moto S3 over HTTP through presigned URLs, the real sops
binary with moto KMS, real bash processes and process groups. Nothing of ours is mocked."""
from __future__ import annotations

import io
import json
import os
import secrets as pysecrets
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support.paths import REPO_ROOT
from support.processes import live_group_members

from lambda_runtime import sops
from lambda_runtime.masking import MASK
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import PAYLOAD_ENV, InputUrl, Manifest, OrderResult, WorkerPayload
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.worker.handler import handler
from lambda_runtime.worker.runner import execute_order

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cr3t-value-" + "x7Q9"


# ---- helpers -----------------------------------------------------------------------------------

@dataclass
class Order:
    """One order's objects in the internal bucket, and the payload that grants access to them."""

    s3: Any
    bucket: str
    run_id: str
    order: str
    payload: WorkerPayload

    def _get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def result(self) -> OrderResult:
        raw = self._get(layout.result_key(self.run_id, self.order))
        assert raw is not None, "no result.json was written"
        return OrderResult.model_validate_json(raw)

    def log(self) -> str:
        raw = self._get(layout.log_key(self.run_id, self.order))
        assert raw is not None, "no log.txt was written"
        return raw.decode()

    def artifacts(self) -> bytes | None:
        return self._get(layout.artifacts_key(self.run_id, self.order))

    def url_fragments(self) -> list[str]:
        """Everything that identifies a capability: each full URL and its signed query string."""
        urls = [self.payload.bundle_url, self.payload.log_url, self.payload.result_url,
                *(i.url for i in self.payload.inputs)]
        if self.payload.artifacts_url:
            urls.append(self.payload.artifacts_url)
        return [*urls, *(urlsplit(u).query for u in urls)]


def make_order(clients: Any, settings: Any, *, cmds: Sequence[str], order: str = "plan", run_id: str | None = None,
               dir: str | None = None, env: Mapping[str, str] | None = None,
               secrets: Mapping[str, str] | None = None, files: Mapping[str, str] | None = None,
               artifacts: Sequence[str] = (), inputs: Sequence[InputUrl] = (), timeout: int = 60,
               has_role: bool = False, embedded_endpoint: str | None = None,
               sops_context: Mapping[str, str] | None = None, kill_grace_seconds: int = 1,
               extra_members: Mapping[str, bytes] | None = None) -> Order:
    """Build a real bundle (manifest, code/) and a sops-encrypted secrets file as the orchestrator
    mints it at dispatch, store them, presign the rest."""
    run_id = run_id or "r" + pysecrets.token_hex(6)
    manifest = Manifest(
        run_id=run_id, order=order, trace_id="trace-1", flow_id="flow-1", cmds=list(cmds), timeout=timeout,
        target="lambda", dir=dir, env=dict(env or {}), secret_env=sorted(k for k in (secrets or {})
                                                                         if not k.startswith("AWS_")),
        has_role=has_role, artifacts=list(artifacts), inputs=[{"from_order": i.from_order, "path": i.path}
                                                              for i in inputs],
        state_bucket=settings.state_bucket, region="us-east-1", embedded_endpoint=embedded_endpoint,
    )
    members: dict[str, bytes] = {"manifest.json": manifest.model_dump_json().encode()}
    bucket = settings.internal_bucket
    if secrets:
        clients.s3.put_object(Bucket=bucket, Key=layout.secrets_key(run_id, order), Body=sops.encrypt(
            secrets, kms_key_arn=settings.kms_key_arn, context=sops_context or {"run_id": run_id, "order": order}))
    for path, text in (files or {"README": "hello\n"}).items():
        members[f"code/{path}"] = text.encode()
    members.update(extra_members or {})
    clients.s3.put_object(Bucket=bucket, Key=layout.bundle_key(run_id, order), Body=_targz(members))

    def presign(method: str, key: str, **extra: str) -> str:
        return clients.s3.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key, **extra},
                                                 ExpiresIn=600)

    payload = WorkerPayload(
        run_id=run_id, order=order, trace_id="trace-1", timeout=timeout, kill_grace_seconds=kill_grace_seconds,
        bundle_url=presign("get_object", layout.bundle_key(run_id, order)),
        log_url=presign("put_object", layout.log_key(run_id, order)),
        result_url=presign("put_object", layout.result_key(run_id, order), IfNoneMatch="*"),
        artifacts_url=presign("put_object", layout.artifacts_key(run_id, order)) if artifacts else None,
        secrets_url=presign("get_object", layout.secrets_key(run_id, order)) if secrets else None,
        inputs=list(inputs),
    )
    return Order(clients.s3, bucket, run_id, order, payload)


def _targz(members: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _artifact_url(clients: Any, settings: Any, producer: Order) -> InputUrl:
    url = clients.s3.generate_presigned_url(
        "get_object", Params={"Bucket": settings.internal_bucket,
                              "Key": layout.artifacts_key(producer.run_id, producer.order)}, ExpiresIn=600)
    return InputUrl(from_order=producer.order, path="dist", url=url)




@pytest.fixture()
def settings(stack: Any) -> Any:
    return stack[0]


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """workdir_parent: must be empty again after every execute_order."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def _run(order: Order, work: Path, **kwargs: Any) -> tuple[OrderResult, str]:
    stream = io.StringIO()
    result = execute_order(order.payload, log_stream=stream, workdir_parent=str(work), **kwargs).result
    assert list(work.iterdir()) == [], "the worker left files behind"
    return result, stream.getvalue()


# ---- tests -------------------------------------------------------------------------------------

def test_success_runs_commands_in_dir_with_env_and_masked_secret(clients, settings, work):
    before = dict(os.environ)
    order = make_order(
        clients, settings, dir="infra", files={"infra/main.tf": "# tf\n", "top.txt": "top\n"},
        env={"JOB_VAR": "from-job", "ORDER_VAR": "from-order"}, secrets={"DB_PASSWORD": SECRET},
        cmds=["echo first; ls", 'echo "job=$JOB_VAR order=$ORDER_VAR"', 'echo "pw=$DB_PASSWORD"',
              'test "$DB_PASSWORD" = ' + SECRET + " && echo secret-ok", "pwd", "echo last"],
    )
    result, streamed = _run(order, work)

    assert result.status is OrderStatus.SUCCEEDED and result.exit_code == 0
    stored = order.result()
    assert stored.status is OrderStatus.SUCCEEDED and stored.exit_code == 0 and stored.producer == "worker"
    assert stored.started_at <= stored.finished_at
    log = order.log()
    assert "main.tf" in log and "top.txt" not in log  # ran inside infra/
    assert log.index("$ echo first; ls") < log.index("first\n") < log.index("job=from-job") < log.index("last\n")
    assert "job=from-job order=from-order" in log
    assert f"pw={MASK}" in log and "secret-ok" in log
    assert log.rstrip().splitlines()[-1].endswith("order succeeded")
    assert "/code/infra\n" in log
    for text in (log, streamed, stored.model_dump_json(), result.log_tail):
        assert SECRET not in text
    assert f"pw={MASK}" in streamed and f"pw={MASK}" in stored.log_tail
    assert dict(os.environ) == before


def test_commands_see_a_fresh_environment_without_engine_credentials(clients, settings, work, monkeypatch):
    monkeypatch.setenv("IAC_CI_TEST_SENTINEL", "engine-only")
    order = make_order(clients, settings, cmds=["env | sort"])
    result, _ = _run(order, work)
    assert result.status is OrderStatus.SUCCEEDED
    log = order.log()
    assert "AWS_ACCESS_KEY_ID=embedded" not in log and "AWS_SECRET_ACCESS_KEY" not in log
    assert "AWS_ENDPOINT_URL" not in log and "IAC_CI_TEST_SENTINEL" not in log and "MOTO_PORT" not in log
    for fragment in order.url_fragments():
        assert fragment not in log
    assert "Signature=" not in log and "X-Amz-Signature" not in log
    assert f"IAC_CI_RUN_ID={order.run_id}\n" in log and "IAC_CI_ORDER=plan\n" in log
    assert "IAC_CI_TRACE_ID=trace-1\n" in log and "IAC_CI_FLOW_ID=flow-1\n" in log
    assert f"IAC_CI_STATE_BUCKET={settings.state_bucket}\n" in log
    assert "AWS_REGION=us-east-1\n" in log and "AWS_DEFAULT_REGION=us-east-1\n" in log
    assert "LANG=C.UTF-8\n" in log and "/home\n" in log


def test_role_credentials_and_embedded_endpoint_reach_commands_masked(aws, clients, settings, work):
    role = {"AWS_ACCESS_KEY_ID": "ASIAROLEKEY1234", "AWS_SECRET_ACCESS_KEY": "role-secret-abcdef",
            "AWS_SESSION_TOKEN": "role-token-ghijkl"}
    order = make_order(clients, settings, secrets=role, has_role=True, embedded_endpoint=aws.endpoint,
                       cmds=["env | sort", 'test "$AWS_ACCESS_KEY_ID" = ASIAROLEKEY1234 && echo role-ok'])
    result, _ = _run(order, work)
    assert result.status is OrderStatus.SUCCEEDED
    log = order.log()
    assert f"AWS_ENDPOINT_URL={aws.endpoint}\n" in log and "role-ok" in log
    assert f"AWS_ACCESS_KEY_ID={MASK}\n" in log and f"AWS_SESSION_TOKEN={MASK}\n" in log
    assert all(value not in log for value in role.values())


def test_failing_command_stops_the_script(clients, settings, work):
    order = make_order(clients, settings, cmds=["echo before", "exit 3", "echo never-printed"])
    result, _ = _run(order, work)
    assert (result.status, result.exit_code) == (OrderStatus.FAILED, 3)
    stored = order.result()
    assert (stored.status, stored.exit_code) == (OrderStatus.FAILED, 3) and "code 3" in stored.error
    log = order.log()
    assert "before\n" in log and "never-printed" not in log


def test_pipeline_failure_counts(clients, settings, work):
    order = make_order(clients, settings, cmds=["false | cat", "echo never-printed"])
    result, _ = _run(order, work)
    assert result.status is OrderStatus.FAILED and "never-printed" not in order.log()


@pytest.mark.parametrize("cmd", ["sleep 1000 & sleep 1000", "trap '' TERM; sleep 1000 & sleep 1000"],
                         ids=["sigterm", "sigkill"])
def test_timeout_kills_the_whole_process_group(clients, settings, work, tmp_path, cmd):
    pgid_file = tmp_path / "pgid"
    order = make_order(clients, settings, timeout=2, kill_grace_seconds=1,
                       cmds=[f"echo $$ > {pgid_file}", cmd])
    began = time.monotonic()
    result, _ = _run(order, work)
    assert time.monotonic() - began < 15
    assert result.status is OrderStatus.TIMED_OUT and result.exit_code is None
    assert "timed out after 2s" in result.error
    assert order.result().status is OrderStatus.TIMED_OUT
    assert ("sending SIGKILL" in order.log()) == ("trap" in cmd)
    pgid = int(pgid_file.read_text())
    deadline = time.monotonic() + 10
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_group_members(pgid) == []
    with pytest.raises(ProcessLookupError):  # zombies are reaped by init shortly after
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)
            time.sleep(0.1)


def test_deadline_shortens_the_time_limit(clients, settings, work):
    order = make_order(clients, settings, timeout=600, cmds=["sleep 1000"])
    result, _ = _run(order, work, deadline_seconds=3)
    assert result.status is OrderStatus.TIMED_OUT and "remaining time" in result.error


def test_existing_result_is_left_alone(clients, settings, work, caplog):
    order = make_order(clients, settings, cmds=["echo hi"])
    first = OrderResult(run_id=order.run_id, order=order.order, status=OrderStatus.TIMED_OUT, producer="watchdog",
                        error="no result in time")
    clients.s3.put_object(Bucket=settings.internal_bucket, Key=layout.result_key(order.run_id, order.order),
                          Body=first.model_dump_json().encode())
    with caplog.at_level("WARNING", logger="lambda_runtime.worker.runner"):
        result, _ = _run(order, work)
    assert result.status is OrderStatus.SUCCEEDED
    assert order.result() == first
    assert "hi\n" in order.log()
    assert any("already reported" in r.getMessage() for r in caplog.records)


def test_artifacts_flow_into_a_consumer(clients, settings, work):
    producer = make_order(clients, settings, order="build", dir="app", artifacts=["dist"],
                          cmds=["mkdir -p dist/sub", "echo built > dist/app.txt", "echo deep > dist/sub/x.txt",
                                "echo other > other.txt"])
    result, _ = _run(producer, work)
    assert result.status is OrderStatus.SUCCEEDED, result.error
    with tarfile.open(fileobj=io.BytesIO(producer.artifacts()), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {"dist", "dist/app.txt", "dist/sub/x.txt"} <= names and "other.txt" not in names

    consumer = make_order(clients, settings, order="deploy", run_id=producer.run_id, dir="svc",
                          inputs=[_artifact_url(clients, settings, producer)],
                          cmds=["cat dist/app.txt dist/sub/x.txt", "test ! -e other.txt"])
    result, _ = _run(consumer, work)
    assert result.status is OrderStatus.SUCCEEDED, result.error
    assert "built\ndeep\n" in consumer.log()


def test_missing_input_fails_before_commands(clients, settings, work, tmp_path):
    producer = make_order(clients, settings, order="build", artifacts=["out"],
                          cmds=["mkdir out", "echo x > out/file"])
    assert _run(producer, work)[0].status is OrderStatus.SUCCEEDED
    marker = tmp_path / "ran"
    consumer = make_order(clients, settings, order="deploy", run_id=producer.run_id,
                          inputs=[_artifact_url(clients, settings, producer)], cmds=[f"touch {marker}"])
    result, _ = _run(consumer, work)
    assert result.status is OrderStatus.FAILED
    assert "'dist'" in result.error and "'build'" in result.error
    assert not marker.exists() and consumer.result().status is OrderStatus.FAILED


def test_links_leaving_the_workdir_are_not_archived(clients, settings, work):
    order = make_order(clients, settings, artifacts=["dist"],
                       cmds=["mkdir dist", "echo in > dist/a.txt", "ln -s a.txt dist/ok", "ln -s /etc dist/etc",
                             "ln -s ../../../.. dist/up"])
    result, _ = _run(order, work)
    assert result.status is OrderStatus.SUCCEEDED, result.error
    with tarfile.open(fileobj=io.BytesIO(order.artifacts()), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert names == {"dist", "dist/a.txt", "dist/ok"}
    assert "dist/etc points outside" in order.log()


def test_artifact_behind_a_symlinked_directory_is_refused(clients, settings, work, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours\n")
    order = make_order(clients, settings, artifacts=["link/secret.txt"], cmds=[f"ln -s {outside} link"])
    result, _ = _run(order, work)
    assert result.status is OrderStatus.FAILED and "leaves the working directory" in result.error
    assert order.artifacts() is None


def test_dir_outside_the_source_tree_is_refused(clients, settings, work, tmp_path):
    marker = tmp_path / "ran"
    order = make_order(clients, settings, dir="../..", cmds=[f"touch {marker}"])
    result, _ = _run(order, work)
    assert result.status is OrderStatus.FAILED and "leaves the source tree" in result.error
    assert not marker.exists()


def test_long_lines_are_cut_and_still_masked(clients, settings, work):
    order = make_order(clients, settings, secrets={"TOKEN": SECRET},
                       cmds=["head -c 65530 /dev/zero | tr '\\0' a; echo \"$TOKEN\"", "printf 'bad \\377 byte\\n'",
                             "echo after"])
    result, streamed = _run(order, work)
    assert result.status is OrderStatus.SUCCEEDED, result.error
    log = order.log()
    assert "line truncated" in log and "after\n" in log and "bad \ufffd byte" in log
    assert max(len(line.encode()) for line in log.splitlines()) < 64 * 1024 + 100
    assert SECRET not in log and SECRET not in streamed and SECRET[:6] not in log  # straddled the cut


def test_missing_artifact_fails_with_its_path(clients, settings, work):
    order = make_order(clients, settings, artifacts=["dist", "reports/plan.txt"], cmds=["mkdir dist"])
    result, _ = _run(order, work)
    assert result.status is OrderStatus.FAILED and result.exit_code == 0
    assert "reports/plan.txt" in result.error
    assert order.result().error == result.error and order.artifacts() is None


def test_secrets_bound_to_another_order_are_refused(clients, settings, work, tmp_path):
    marker = tmp_path / "ran"
    order = make_order(clients, settings, secrets={"TOKEN": SECRET}, cmds=[f"touch {marker}"],
                       sops_context={"run_id": "r-other", "order": "other"})
    result, _ = _run(order, work)
    assert result.status is OrderStatus.FAILED and result.exit_code is None
    assert "different run or order" in result.error
    assert not marker.exists()
    stored = order.result()
    assert stored.status is OrderStatus.FAILED and "different run or order" in stored.error
    assert "different run or order" in order.log()


def test_unreachable_bundle_is_reported(clients, settings, work):
    order = make_order(clients, settings, cmds=["echo hi"])
    clients.s3.delete_object(Bucket=settings.internal_bucket, Key=layout.bundle_key(order.run_id, order.order))
    result, _ = _run(order, work)
    assert result.status is OrderStatus.FAILED and "bundle" in result.error and "404" in result.error
    stored = order.result()
    assert stored.error == result.error
    assert all(fragment not in stored.error for fragment in order.url_fragments())


def test_bundle_escaping_paths_are_refused(clients, settings, work, tmp_path):
    marker = tmp_path / "ran"
    order = make_order(clients, settings, cmds=[f"touch {marker}"],
                       extra_members={"code/../../evil.txt": b"x"})
    result, _ = _run(order, work)
    assert result.status is OrderStatus.FAILED and "refused to unpack" in result.error
    assert not marker.exists() and not (tmp_path / "evil.txt").exists()


def test_handler_returns_the_result_without_the_tail(clients, settings, work):
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 33_000  # 3 s for the commands after the reporting margin

    ok = make_order(clients, settings, cmds=["echo hi"])
    out = handler(ok.payload.model_dump(mode="json"), Context())
    assert out["status"] == "succeeded" and "log_tail" not in out
    slow = make_order(clients, settings, timeout=600, cmds=["sleep 1000"])
    out = handler(slow.payload.model_dump(mode="json"), Context())
    assert out["status"] == "timed_out" and slow.result().status is OrderStatus.TIMED_OUT


def _worker_env(aws: Any, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **aws.env(), **extra}


def test_codebuild_entrypoint_reads_the_payload_from_the_environment(aws, clients, settings):
    order = make_order(clients, settings, secrets={"TOKEN": SECRET}, cmds=['echo "token=$TOKEN"', "env"])
    proc = subprocess.run([sys.executable, "-m", "lambda_runtime.worker"], cwd=REPO_ROOT, capture_output=True,
                          env=_worker_env(aws, **{PAYLOAD_ENV: order.payload.model_dump_json()}), timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert order.result().status is OrderStatus.SUCCEEDED
    log = order.log()
    assert f"token={MASK}" in log and PAYLOAD_ENV not in log and "AWS_ACCESS_KEY_ID=embedded" not in log
    assert f"token={MASK}".encode() in proc.stdout and SECRET.encode() not in proc.stdout + proc.stderr


def test_codebuild_entrypoint_reads_the_payload_from_stdin(aws, clients, settings):
    order = make_order(clients, settings, cmds=["exit 4"])
    proc = subprocess.run([sys.executable, "-m", "lambda_runtime.worker", "--event-file", "-"], cwd=REPO_ROOT,
                          input=order.payload.model_dump_json().encode(), capture_output=True,
                          env=_worker_env(aws), timeout=60)
    assert proc.returncode == 1, proc.stderr.decode()
    assert (order.result().status, order.result().exit_code) == (OrderStatus.FAILED, 4)


def test_entrypoint_without_a_usable_payload_exits_3(aws):
    proc = subprocess.run([sys.executable, "-m", "lambda_runtime.worker"], cwd=REPO_ROOT, capture_output=True,
                          env=_worker_env(aws, **{PAYLOAD_ENV: json.dumps({"bundle_url": "http://x/?sig=abc"})}),
                          timeout=60)
    assert proc.returncode == 3
    assert b"invalid worker payload" in proc.stderr and b"sig=abc" not in proc.stderr


def test_sigterm_to_the_worker_stops_commands_and_reports(aws, clients, settings, tmp_path):
    pgid_file = tmp_path / "pgid"
    order = make_order(clients, settings, timeout=600, cmds=[f"echo $$ > {pgid_file}", "sleep 1000"])
    proc = subprocess.Popen([sys.executable, "-m", "lambda_runtime.worker"], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_worker_env(aws, **{PAYLOAD_ENV: order.payload.model_dump_json()}))
    try:
        deadline = time.monotonic() + 30
        while not (pgid_file.exists() and pgid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        pgid = int(pgid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert order.result().status is OrderStatus.FAILED
    deadline = time.monotonic() + 10
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_group_members(pgid) == []


def test_commands_cannot_read_the_payload_from_the_worker_process(aws, clients, settings):
    """A command reading /proc/<worker>/environ must not find the presigned URLs (result forgery)."""
    order = make_order(clients, settings, cmds=[
        "tr '\\0' '\\n' < /proc/$PPID/environ > seen.txt || true",
        "if grep -q -e X-Amz-Signature -e result.json seen.txt; then echo LEAKED; else echo CLEAN; fi"])
    proc = subprocess.run([sys.executable, "-m", "lambda_runtime.worker"], cwd=REPO_ROOT, capture_output=True,
                          env=_worker_env(aws, **{PAYLOAD_ENV: order.payload.model_dump_json()}), timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = order.log().splitlines()
    assert "CLEAN" in lines and "LEAKED" not in lines


def test_a_worker_past_the_watchdog_deadline_does_not_start_commands(clients, settings, work):
    order = make_order(clients, settings, cmds=["echo SHOULD-NOT-RUN"])
    order.payload = order.payload.model_copy(update={"not_after": time.time() - 1})
    result, stream = _run(order, work)
    assert result.status is OrderStatus.TIMED_OUT and "watchdog" in result.error
    assert "SHOULD-NOT-RUN" not in stream


def test_the_watchdog_deadline_caps_the_time_limit(clients, settings, work):
    order = make_order(clients, settings, timeout=600, cmds=["sleep 1000"])
    order.payload = order.payload.model_copy(update={"not_after": time.time() + 8})
    result, _ = _run(order, work)
    assert result.status is OrderStatus.TIMED_OUT and "watchdog's deadline" in result.error
