"""The ``iac-ci`` command as users run it: a real process, real exit codes, real signals."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import waiting
from support.paths import REPO_ROOT

from lambda_runtime.schema.events import ORDER_STATE_CHANGE, RUN_STATE_CHANGE

REPO = REPO_ROOT
pytestmark = pytest.mark.slow


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return {**env, **extra}


def iac_ci(*args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iac-ci", *args], capture_output=True, text=True, timeout=timeout, env=cli_env(), **kw)


def write_job(tmp_path: Path, job: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_run_demo_json() -> None:
    proc = iac_ci(
        "run",
        str(REPO / "examples/demo/job.yaml"),
        "--json",
        "--quiet",
        "--ssm",
        "/iac-ci/demo/deploy-token=demo-s3cr3t-token",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "succeeded"
    assert out["orders"]["lint"]["status"] == "failed" and out["orders"]["deploy-dev"]["status"] == "succeeded"
    assert "deploying demo-app to dev with token ***" in out["orders"]["deploy-dev"]["log_tail"]
    assert "demo-s3cr3t-token" not in proc.stdout + proc.stderr
    assert set(out["orders"]["build"]) == {"status", "exit_code", "duration_s", "log_tail"}


def test_failed_job_exits_1(tmp_path: Path) -> None:
    job = write_job(tmp_path, {"name": "f", "orders": [{"name": "a", "cmds": ["echo no; exit 5"]}]})
    proc = iac_ci("run", str(job), "--json", "--quiet")
    assert proc.returncode == 1
    order = json.loads(proc.stdout)["orders"]["a"]
    assert order["status"] == "failed" and order["exit_code"] == 5 and "no" in order["log_tail"]


def test_validate_schema_and_invalid_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\norders:\n  - name: a\n    cmds: [x]\n    depends_on: [zzz]\n")
    proc = iac_ci("validate", str(bad))
    assert proc.returncode == 2 and "order 'a': depends_on: unknown order 'zzz'" in proc.stderr
    assert iac_ci("run", str(bad)).returncode == 2
    assert iac_ci("validate", str(tmp_path / "missing.yaml")).returncode == 2
    assert iac_ci("validate", str(REPO / "examples/demo/job.yaml")).returncode == 0
    schema = json.loads(iac_ci("schema").stdout)
    assert "orders" in schema["properties"]


def test_an_alias_bomb_job_file_exits_2_naming_the_place(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: bomb\nx: &a [y, y, y, y, y, y, y, y, y]\norders: [{name: o, cmds: *a}]\n")
    proc = iac_ci("validate", str(bomb))
    assert proc.returncode == 2
    assert "YAML aliases are not accepted (line 3, column" in proc.stderr


def test_secret_seeding_with_json_key(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        {
            "name": "s",
            "orders": [
                {
                    "name": "a",
                    "cmds": ['test "$PW" = hunter22', 'echo "pw=$PW"'],
                    "secrets": [{"env": "PW", "secret": "iac-ci/db", "key": "pw"}],
                }
            ],
        },
    )
    proc = iac_ci("run", str(job), "--json", "--quiet", "--secret", 'iac-ci/db={"pw": "hunter22"}')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pw=***" in json.loads(proc.stdout)["orders"]["a"]["log_tail"]
    assert "hunter22" not in proc.stdout + proc.stderr


def _running_command(marker: str) -> bool:
    """Whether a process running ``sleep <marker>`` exists (read from /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                return True
        except OSError:
            continue
    return False


def test_ctrl_c_cancels_the_run(tmp_path: Path) -> None:
    marker = f"{120 + secrets.randbelow(1000) / 1000:.3f}"  # a sleep no other test runs
    job = write_job(
        tmp_path,
        {
            "name": "c",
            "orders": [
                {"name": "long", "cmds": [f"sleep {marker}"]},
                {"name": "next", "depends_on": ["long"], "cmds": ["true"]},
            ],
        },
    )
    proc = subprocess.Popen(
        ["iac-ci", "run", str(job), "--json", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    # accepted, packaged and the long order started: its command is in the process table (a fixed
    # sleep here raced a loaded machine)
    waiting.wait_for(lambda: _running_command(marker), timeout=60, what="the long order's command", poll=0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err[-2000:]
    result = json.loads(out)
    assert result["status"] == "cancelled"
    assert result["orders"]["next"]["status"] == "cancelled"
    assert result["orders"]["long"]["status"] in ("cancelled",)


def test_endpoint_url_reuses_a_running_server(aws, tmp_path: Path) -> None:
    job = write_job(tmp_path, {"name": "ep", "orders": [{"name": "a", "cmds": ["echo hi"]}]})
    for _ in range(2):  # the second run finds every resource already there
        proc = iac_ci("run", str(job), "--json", "--quiet", "--endpoint-url", aws.endpoint)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["status"] == "succeeded"


def test_validate_checks_an_iac_ci_yml_as_a_pull_request_would(tmp_path: Path) -> None:
    example = REPO_ROOT / "examples" / "terraform-pr"
    readme = (example / "README.md").read_text()
    command = "iac-ci validate .iac-ci.yml --policy policy.yaml"
    assert f"`{command}`" in readme  # the walk-through's command, run as written
    ok = iac_ci(*command.split()[1:], cwd=example)
    assert ok.returncode == 0, ok.stderr
    assert "2 plan and 2 apply orders" in ok.stderr
    bad = tmp_path / ".iac-ci.yml"
    bad.write_text("orderz: []\norders:\n  - name: plan\n    cmds: []\n  - name: apply\n    command: apply\n"
                   "    cmds: [x]\n    depends_on: [ghost]\n  - name: plan\n    cmds: [x]\n    apply_on: merge\n")
    refused = iac_ci("validate", str(bad))
    assert refused.returncode == 2
    for problem in ("orderz: unknown field", "order 'plan': cmds", "unknown order 'ghost'", "duplicate order name",
                    "apply_on: only for orders with command: apply"):
        assert problem in refused.stderr, (problem, refused.stderr)


def test_run_keeps_its_files_only_in_the_log_dir_it_is_given(tmp_path: Path) -> None:
    """Without --log-dir nothing of the run is left in the temporary folder; with it, the events, the EMF
    documents and each worker's output are there after the command, and the command says where."""
    job = write_job(tmp_path, {"name": "kept", "orders": [{"name": "a", "target": "lambda", "cmds": ["echo hi"]}]})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**cli_env(), "TMPDIR": str(scratch)}
    gone = subprocess.run(["iac-ci", "run", str(job), "--quiet"], capture_output=True, text=True, timeout=180, env=env)
    assert gone.returncode == 0, gone.stderr[-3000:]
    assert not list(scratch.glob("iac-ci-workers-*"))

    kept = tmp_path / "kept"
    proc = subprocess.run(["iac-ci", "run", str(job), "--quiet", "--log-dir", str(kept)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"events, metrics and the workers' output: {kept}" in proc.stderr
    events = [json.loads(line) for line in (kept / "events.jsonl").read_text().splitlines()]
    assert {ORDER_STATE_CHANGE, RUN_STATE_CHANGE} <= {e["detail-type"] for e in events}
    metrics = [json.loads(line) for line in (kept / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("order") == "a" and "OrderDuration" in m for m in metrics)
    assert any(path.suffix == ".out" for path in kept.iterdir())


def _serve_until_up_then_stop(env: dict[str, str], *extra: str) -> str:
    """``iac-ci serve`` on a free port until it prints its URL, then SIGTERM; returns its stderr."""
    proc = subprocess.Popen(["iac-ci", "serve", "--port", "0", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    return err


def test_serve_removes_its_temporary_folder_and_keeps_a_log_dir(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**cli_env(), "TMPDIR": str(scratch)}
    err = _serve_until_up_then_stop(env)
    assert "events (one EventBridge event per line): " in err
    assert not list(scratch.glob("iac-ci-workers-*")), list(scratch.iterdir())

    kept = tmp_path / "kept"
    err = _serve_until_up_then_stop(env, "--log-dir", str(kept))
    assert f"events (one EventBridge event per line): {kept / 'events.jsonl'}" in err
    assert kept.is_dir()
