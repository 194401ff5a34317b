"""Oversized sources through the whole engine: a job whose source is a zip bomb (honest or lying
about its sizes) or a repository that checks out past the cap ends ``failed`` with the error naming
the source and the cap, and the packaging function leaves nothing of it in its temporary directory.

These run with the default caps (512 MiB, 100,000 files), which is what a deployment gets; the
caps' mechanics at small sizes are in tests/unit/test_packaging_sources.py.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.bombs import lie_about_sizes, zeros_zip

from iac_ci.embedded.stack import EmbeddedStack

pytestmark = pytest.mark.slow
MiB = 1024 * 1024
BOMB_BYTES = 600 * MiB  # past the default max_source_bytes (512 MiB); about 600 KB zipped


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    honest = zeros_zip(root / "honest.zip", BOMB_BYTES)
    liar = root / "liar.zip"
    liar.write_bytes(honest.read_bytes())
    return {"honest": honest, "liar": lie_about_sizes(liar, 1000)}


@pytest.fixture()
def packaging_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory packaging works in (in this process, as the pumps run handlers)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture()
def engine(aws, packaging_tmp: Path) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(aws, prefix="b" + secrets.token_hex(4),
                          settings_overrides={"allowed_source_buckets": ("bombs-*",)})
    with stack:
        yield stack
    assert not stack.pump_errors


@pytest.fixture()
def bucket(engine: EmbeddedStack) -> str:
    name = "bombs-" + secrets.token_hex(4)
    engine.clients.s3.create_bucket(Bucket=name)
    return name


def run_job(engine: EmbeddedStack, job: dict[str, Any]) -> dict[str, Any]:
    code, body = engine.submit({"username": "tester", **job})
    assert code == 202, body
    return engine.wait(body["run_id"], timeout=120)


def packaging_leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("iac-ci-pkg-"))


def zip_job(uri: str) -> dict[str, Any]:
    return {"name": "bomb", "orders": [{"name": "plan", "source": {"s3": uri}, "cmds": ["ls -la"]}]}


def test_a_zip_bomb_fails_the_run_naming_the_source_and_the_cap(engine, bucket, bombs, packaging_tmp) -> None:
    engine.clients.s3.upload_file(str(bombs["honest"]), bucket, "src/bomb.zip")
    uri = f"s3://{bucket}/src/bomb.zip"
    done = run_job(engine, zip_job(uri))
    assert done["status"] == "failed" and done["orders"] == {}
    assert f"source {uri} expands to 600 MiB, past 512 MiB (max_source_bytes)" in done["error"]
    assert packaging_leftovers(packaging_tmp) == []


def test_a_zip_lying_about_its_sizes_is_stopped_while_extracting(engine, bucket, bombs, packaging_tmp) -> None:
    engine.clients.s3.upload_file(str(bombs["liar"]), bucket, "src/liar.zip")
    uri = f"s3://{bucket}/src/liar.zip"
    done = run_job(engine, zip_job(uri))
    assert done["status"] == "failed" and done["orders"] == {}
    assert f"source {uri}: member 'zeros.bin' expands more than 200 times its compressed size" in done["error"]
    assert packaging_leftovers(packaging_tmp) == []


def big_repository(path: Path, size: int) -> Path:
    """A real repository whose one commit holds a ``size``-byte blob of zeros (a sparse file here,
    a few MB of git objects)."""
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, env=env)

    git("init", "-q", "-b", "main")
    git("config", "core.compression", "1")  # fast to build; the checkout is as large either way
    with open(path / "zeros.bin", "wb") as f:
        f.truncate(size)
    git("add", "-A")
    git("commit", "-qm", "a large blob")
    return path


def test_a_repository_checking_out_past_the_cap_fails_the_run(engine, tmp_path, packaging_tmp) -> None:
    repo = big_repository(tmp_path / "repo", 520 * MiB)
    done = run_job(engine, {"name": "big", "orders": [
        {"name": "plan", "source": {"git": {"url": f"file://{repo}", "ref": "main"}}, "cmds": ["ls"]}]})
    assert done["status"] == "failed" and done["orders"] == {}
    assert f"source file://{repo} checks out past 512 MiB (max_source_bytes)" in done["error"]
    assert packaging_leftovers(packaging_tmp) == []


def test_the_caps_come_from_the_settings(aws, tmp_path, packaging_tmp) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=env)
    (repo / "blob.bin").write_bytes(os.urandom(4 * MiB))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "4 MiB"], cwd=repo, check=True, env=env)
    stack = EmbeddedStack(aws, prefix="b" + secrets.token_hex(4), settings_overrides={"max_source_bytes": MiB})
    with stack:
        done = run_job(stack, {"name": "capped", "orders": [
            {"name": "plan", "source": {"git": {"url": f"file://{repo}", "ref": "main"}}, "cmds": ["ls"]}]})
    assert done["status"] == "failed"
    assert f"order 'plan': source file://{repo} fetches past 1 MiB (max_source_bytes)" in done["error"]


def test_iac_ci_run_of_a_job_with_a_zip_bomb_exits_2_with_the_error(aws, bombs, tmp_path) -> None:
    from lambda_runtime.aws.clients import AwsClients

    bucket = "bombs-" + secrets.token_hex(4)
    s3 = AwsClients(region=aws.region).s3
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(bombs["honest"]), bucket, "bomb.zip")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(zip_job(f"s3://{bucket}/bomb.zip")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.run(["iac-ci", "run", str(job), "--json", "--quiet", "--endpoint-url", aws.endpoint],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]  # bad input: nothing could be built from it
    assert json.loads(proc.stdout)["status"] == "failed"  # stdout is the result alone; logs go to stderr
    stderr = " ".join(proc.stderr.split())  # rich wraps long lines
    assert f"source s3://{bucket}/bomb.zip expands to 600 MiB, past 512 MiB (max_source_bytes)" in stderr
