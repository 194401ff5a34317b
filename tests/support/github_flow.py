"""Driving the engine as GitHub does: webhook payloads built from the fixture files, signed and
POSTed over real HTTP, real git repositories, and waiting for what the fake GitHub records."""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import requests

from lambda_runtime.intake.signature import sign
from support import waiting
from support.fakes.github_server import FakeGitHub
from support.paths import GITHUB_FIXTURES

T = TypeVar("T")


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=env).stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` (path -> text) into the work tree, commit them, return the commit id."""
    for path, text in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def new_repo(path: Path, files: dict[str, str], *, branch: str = "main") -> tuple[Path, str]:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    return path, commit_files(path, files, "initial")


def pull_request_payload(*, number: int, sha: str, clone_url: str, action: str = "opened", repo: str = "acme/infra",
                         author: str = "alice", association: str | None = "MEMBER", user_type: str = "User",
                         head_repo: str | None = None, base_ref: str = "main", base_sha: str | None = None
                         ) -> dict[str, Any]:
    """A ``pull_request`` event from the fixture file: ``head_repo`` other than ``repo`` makes it a fork's."""
    doc = copy.deepcopy(json.loads((GITHUB_FIXTURES / "pull_request_opened.json").read_text()))
    doc["action"] = action
    doc["repository"]["full_name"] = repo
    doc["repository"]["name"] = repo.split("/")[1]
    pr = doc["pull_request"]
    doc["number"] = pr["number"] = number
    pr["user"] = {**pr["user"], "login": author, "type": user_type}
    pr["head"]["user"] = dict(pr["user"])
    doc["sender"] = dict(pr["user"])
    if association is None:
        pr.pop("author_association", None)
    else:
        pr["author_association"] = association
    pr["head"]["sha"] = sha
    pr["head"]["ref"] = f"change-{number}"
    head = head_repo or repo
    pr["head"]["label"] = f"{head.split('/')[0]}:change-{number}"
    pr["head"]["repo"].update(full_name=head, name=head.split("/")[1], clone_url=clone_url,
                              owner={"login": head.split("/")[0], "id": 1, "type": "User"})
    pr["base"]["ref"] = base_ref
    pr["base"]["repo"]["full_name"] = repo
    if base_sha:
        pr["base"]["sha"] = base_sha
    return doc


def comment_payload(*, number: int, body: str, login: str, repo: str = "acme/infra", association: str = "MEMBER",
                    comment_id: int | None = None, created_at: str | None = None, action: str = "created"
                    ) -> dict[str, Any]:
    """An ``issue_comment`` event on pull request ``number`` from the fixture file, written now."""
    doc = copy.deepcopy(json.loads((GITHUB_FIXTURES / "issue_comment_created.json").read_text()))
    doc["action"] = action
    doc["repository"]["full_name"] = repo
    doc["issue"]["number"] = number
    doc["issue"]["pull_request"]["url"] = f"https://api.github.com/repos/{repo}/pulls/{number}"
    comment = doc["comment"]
    comment["id"] = comment_id or uuid.uuid4().int % 10**12
    comment["body"] = body
    comment["user"] = {**comment["user"], "login": login}
    comment["author_association"] = association
    comment["created_at"] = comment["updated_at"] = created_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["sender"] = dict(comment["user"])
    return doc


def api_pull_request(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What ``GET /repos/{o}/{r}/pulls/{n}`` answers for the pull request of a ``pull_request`` event."""
    pr = copy.deepcopy(event["pull_request"])
    pr.update(changes)
    return pr


def deliver(url: str, body: bytes | dict[str, Any], *, secret: str, event: str = "pull_request",
            delivery: str | None = None) -> requests.Response:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return requests.post(f"{url}/webhooks/github", data=data, timeout=10, headers={
        "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()), "X-Hub-Signature-256": sign(secret, data)})


def wait_for(predicate: Callable[[], T | None], timeout: float = 90, what: str = "condition") -> T:
    return waiting.wait_for(predicate, timeout=timeout, what=what, poll=0.3)


def final_status(fake: FakeGitHub, sha: str, after: int = 0) -> dict[str, Any] | None:
    return next((s for s in list(fake.statuses)[after:] if s["sha"] == sha and s["state"] != "pending"), None)


class ConnectionRecorder:
    """A TCP listener that records every connection and closes it: a clone URL pointing here proves
    whether anything tried to fetch from it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.5)
        self.connections = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()
