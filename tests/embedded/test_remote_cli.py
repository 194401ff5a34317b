"""``iac-ci submit/status/cancel/smoke`` against a stand-in for a deployed stack: the same
handlers behind a local HTTP server, found through CloudFormation outputs, with the secret
in Secrets Manager — all on the embedded AWS."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from iac_ci.embedded.http_api import HttpApi
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.schema import deployment

pytestmark = pytest.mark.slow


@pytest.fixture()
def deployed(aws, clients):
    """An embedded stack served over HTTP and registered as a CloudFormation stack with outputs."""
    stack = EmbeddedStack(aws, prefix="d" + secrets.token_hex(4), settings_overrides={"watchdog_grace_seconds": 3})
    with stack, HttpApi(stack.api) as http:
        name = "iac-ci-" + secrets.token_hex(3)
        template = {
            "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {
                deployment.OUTPUT_API_URL: {"Value": http.url + "/"},
                deployment.OUTPUT_WEBHOOK_SECRET_ARN: {"Value": stack.settings.webhook_secret_id},
                deployment.OUTPUT_DONE_BUCKET: {"Value": stack.settings.done_bucket},
            },
        }
        clients.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
        yield name, stack


def cli(aws, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(aws.env())
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return subprocess.run(["iac-ci", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_submit_follows_to_the_end_and_status_reports_it(aws, deployed, tmp_path) -> None:
    name, _ = deployed
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "remote", "orders": [
        {"name": "a", "target": "lambda", "cmds": ["echo remote-ok"]},
        {"name": "b", "depends_on": ["a"], "cmds": ["exit 3"], "must_succeed": False}]}))
    proc = cli(aws, "submit", str(job), "--stack", name, "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "succeeded" and out["orders"]["b"]["exit_code"] == 3
    assert "remote-ok" in out["orders"]["a"]["log_tail"]
    status = cli(aws, "status", out["run_id"], "--stack", name, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["orders"] == out["orders"]


def test_submit_rejected_job_exits_2_with_problems(aws, deployed, tmp_path) -> None:
    name, _ = deployed
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "remote", "orders": [
        {"name": "a", "cmds": ["true"], "secrets": [{"env": "X", "ssm": "/not-allowed/x"}]}]}))
    proc = cli(aws, "submit", str(job), "--stack", name)
    assert proc.returncode == 2
    assert ("order 'a': secrets[0]: SSM parameter '/not-allowed/x' is not granted by environment 'default'"
            in proc.stderr)


def test_cancel_a_running_job(aws, deployed, tmp_path) -> None:
    name, stack = deployed
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "remote", "orders": [{"name": "long", "cmds": ["sleep 60"]}]}))
    proc = cli(aws, "submit", str(job), "--stack", name, "--no-wait")
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    deadline = time.monotonic() + 30
    while stack.dispatcher.running() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert cli(aws, "cancel", run_id, "--stack", name).returncode == 0
    done = stack.wait(run_id, timeout=30)
    assert done["status"] == "cancelled"
    again = cli(aws, "cancel", run_id, "--stack", name)
    assert again.returncode == 1 and "already finished" in again.stderr
    assert cli(aws, "status", run_id, "--stack", name).returncode == 1


def test_smoke(aws, deployed) -> None:
    name, _ = deployed
    proc = cli(aws, "smoke", "--stack", name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "smoke test passed" in proc.stderr


def test_unknown_stack_and_unknown_run(aws, deployed) -> None:
    name, _ = deployed
    proc = cli(aws, "status", "nope", "--stack", "no-such-stack")
    assert proc.returncode == 1 and "no-such-stack" in proc.stderr
    assert cli(aws, "status", "0123456789abcdef", "--stack", name).returncode == 2
