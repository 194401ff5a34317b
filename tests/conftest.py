"""Shared fixtures: one moto server on loopback for the session, fresh resources per test.

moto starts before any client exists and every client reaches it over real HTTP through
``AWS_ENDPOINT_URL``, exactly as the embedded runner does. Resources are created by the
same provisioning code (and so the same table definitions) the runner and construct use.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from iac_ci.embedded.server import EmbeddedAws
from lambda_runtime.aws.clients import AwsClients

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def aws() -> Iterator[EmbeddedAws]:
    # in this process: the IAM-enforcement tests switch moto's authorization on and complete it from here
    server = EmbeddedAws.start(in_process=True)
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture()
def clients(aws: EmbeddedAws) -> AwsClients:
    return AwsClients(region=aws.region)


@pytest.fixture()
def stack(clients: AwsClients):
    """Freshly provisioned engine resources under a unique prefix: (Settings, Queues)."""
    from iac_ci.embedded.provision import provision

    prefix = "t" + secrets.token_hex(4)
    return provision(clients, prefix=prefix, overrides={"watchdog_grace_seconds": 2, "lock_lease_seconds": 30})


@pytest.fixture()
def git_repo(tmp_path: Path) -> Path:
    """A real local git repository with two commits; returns its path."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                              env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}).stdout

    git("init", "-q", "-b", "main")
    (repo / "infra").mkdir()
    (repo / "infra" / "main.tf").write_text("# v1\n")
    git("add", "-A")
    git("commit", "-qm", "v1")
    (repo / "infra" / "main.tf").write_text("# v2\n")
    git("commit", "-qam", "v2")
    return repo


# The longest modules start first: the suite runs one module per worker (``--dist loadfile``), so a
# long module collected last would run alone at the end while the other workers sit idle. Measured
# with ``pytest --durations``; the order of the rest is unchanged.
LONGEST_FIRST = (
    "embedded/test_github_pull_requests.py",
    "construct/test_wheel_install.py",
    "evidence/test_faults.py",
    "embedded/test_cli.py",
    "evidence/test_secret_canary.py",
    "embedded/test_pipeline_examples.py",
    "embedded/test_remote_cli.py",
    "embedded/test_cli_policy.py",
    "embedded/test_approvals.py",
    "construct/test_construct_nag.py",
    "embedded/test_concurrency_caps.py",
    "embedded/test_github_pr_workflow.py",
    "embedded/test_source_bombs.py",
    "embedded/test_readme_aws.py",
    "construct/test_construct_logical_ids.py",
    "embedded/test_logs_cli.py",
    "embedded/test_certs_lifecycle.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).relative_to(Path(__file__).parent).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: within a module and among the rest, collection order stays
