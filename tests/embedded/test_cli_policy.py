"""``iac-ci run --policy`` and ``--approve`` as users run them: a real process and real exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_cli import iac_ci, write_job

pytestmark = pytest.mark.slow

POLICY = {
    "environments": {
        "default": {"ssm": ["/iac-ci/dev/"]},
        "prod": {"ssm": ["/iac-ci/prod/"], "reviewers": ["alice", "bob"], "required_approvals": 2},
    }
}
JOB = {
    "name": "promote",
    "orders": [
        {"name": "plan", "target": "lambda", "cmds": ["echo plan"]},
        {"name": "apply", "target": "lambda", "environment": "prod", "depends_on": ["plan"],
         "secrets": [{"env": "TOKEN", "ssm": "/iac-ci/prod/token"}], "cmds": ['echo "applying with $TOKEN"']},
        {"name": "smoke", "target": "lambda", "depends_on": ["apply"], "cmds": ["echo smoke"]},
    ],
}


@pytest.fixture()
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    return path


def test_approve_releases_the_order_and_the_secret_reaches_it_masked(tmp_path: Path, policy: Path) -> None:
    proc = iac_ci("run", str(write_job(tmp_path, JOB)), "--policy", str(policy), "--approve", "apply",
                  "--ssm", "/iac-ci/prod/token=prod-t0ken-4242", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {n: o["status"] for n, o in out["orders"].items()} == {
        "plan": "succeeded", "apply": "succeeded", "smoke": "succeeded"}
    assert "applying with ***" in out["orders"]["apply"]["log_tail"]
    assert "prod-t0ken-4242" not in proc.stdout + proc.stderr
    assert out["orders"]["apply"]["approval"]["approved_by"][0].startswith("local:")
    assert "approved apply (prod) with --approve" in proc.stderr


def test_without_approval_and_without_a_terminal_the_order_is_rejected(tmp_path: Path, policy: Path) -> None:
    proc = iac_ci("run", str(write_job(tmp_path, JOB)), "--policy", str(policy),
                  "--ssm", "/iac-ci/prod/token=prod-t0ken-4242", "--json", "--quiet", stdin=None)
    assert proc.returncode == 1, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {n: o["status"] for n, o in out["orders"].items()} == {
        "plan": "succeeded", "apply": "rejected", "smoke": "skipped"}
    assert "pass --approve apply" in proc.stderr


def test_a_secret_outside_its_environment_exits_2_naming_the_order(tmp_path: Path, policy: Path) -> None:
    job = {"name": "sneak", "orders": [{"name": "plan", "cmds": ["env"],
                                        "secrets": [{"env": "T", "ssm": "/iac-ci/prod/token"}]}]}
    proc = iac_ci("run", str(write_job(tmp_path, job)), "--policy", str(policy), "--quiet")
    assert proc.returncode == 2
    assert ("order 'plan': secrets[0]: SSM parameter '/iac-ci/prod/token' is not granted by environment "
            "'default' (it grants: /iac-ci/dev/)") in proc.stderr
    assert "accepted" not in proc.stderr  # nothing started


def test_a_bad_policy_or_an_unknown_approve_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("environments:\n  prod: {reviewers: [alice], required_approvals: 3, typo: 1}\n")
    proc = iac_ci("validate", str(write_job(tmp_path, JOB)), "--policy", str(bad))
    assert proc.returncode == 2
    assert "can never be met" in proc.stderr or "typo: unknown field" in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(POLICY))
    proc = iac_ci("run", str(write_job(tmp_path, JOB)), "--policy", str(good), "--approve", "aply", "--quiet")
    assert proc.returncode == 2 and "--approve names no order of the job: aply" in proc.stderr


def test_the_example_policy_validates_the_example_job() -> None:
    from support.paths import REPO_ROOT

    proc = iac_ci("validate", str(REPO_ROOT / "examples/demo/job.yaml"), "--policy",
                  str(REPO_ROOT / "examples/policy.yaml"))
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 2:  # the demo asks for /iac-ci/demo/..., which the example's plan environment does not grant
        assert "is not granted by environment 'plan'" in proc.stderr


def test_the_readme_promote_example_runs_as_written() -> None:
    """The README's example command, taken from the README itself, so the two cannot drift."""
    import shlex

    from support.paths import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("iac-ci run examples/promote/job.yaml")]
    args = shlex.split(line)[1:]
    proc = iac_ci(*args, "--json", "--quiet", cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "succeeded"
    assert "applying with token ***" in out["orders"]["apply"]["log_tail"] and "s3cr3t" not in proc.stdout
    assert out["orders"]["apply"]["approval"]["environment"] == "prod"
