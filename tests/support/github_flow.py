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


def _fixture(name: str) -> dict[str, Any]:
    """A fresh copy of a fixture file, so a builder can change it without touching the next test's."""
    doc: dict[str, Any] = json.loads((GITHUB_FIXTURES / name).read_text())
    return doc


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rehome(value: Any, old: str, new: str) -> Any:
    """``value`` with every string naming repository ``old`` naming ``new`` instead: the examples of
    ``@octokit/webhooks-examples`` describe other repositories (URLs included), the tests describe ``acme/infra``."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {key: _rehome(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_rehome(item, old, new) for item in value]
    return value


def _event(name: str, repo: str) -> dict[str, Any]:
    """Fixture ``name`` moved to ``repo`` and delivered to the App installation of the tests' world (the one
    of ``pull_request_opened.json``), as GitHub delivers every event of one repository."""
    doc = _fixture(name)
    doc = _rehome(doc, doc["repository"]["full_name"], repo)
    owner = repo.split("/")[0]
    doc["repository"].update(full_name=repo, name=repo.split("/")[1])
    doc["repository"]["owner"]["login"] = owner
    if "organization" in doc:
        doc["organization"]["login"] = owner
    doc["installation"] = _fixture("pull_request_opened.json")["installation"]
    return doc


def _pull_request_fixture(action: str) -> str:
    """The example of that very action when there is one: their fields (``before``/``after``, ``closed_at``...) are
    what GitHub sends for it."""
    name = f"pull_request_{action}.json"
    return name if (GITHUB_FIXTURES / name).is_file() else "pull_request_opened.json"


def _close(pr: dict[str, Any], *, merged: bool | None, merge_sha: str | None, closed_at: str) -> None:
    """A closed pull request as GitHub shows it: closed when the event is sent, ``merged_at`` and ``merged``
    agree, ``merge_commit_sha`` is the merge commit (of a test merge when not merged)."""
    pr["closed_at"] = closed_at
    if merge_sha is not None:
        pr["merge_commit_sha"] = merge_sha
    if merged is not None:
        pr["merged"] = merged
        pr["merged_at"] = pr["closed_at"] if merged else None
        pr["merged_by"] = dict(pr["user"]) if merged else None


def pull_request_payload(*, number: int, sha: str, clone_url: str, action: str = "opened", repo: str = "acme/infra",
                         author: str = "alice", association: str | None = "MEMBER", user_type: str = "User",
                         head_repo: str | None = None, base_ref: str = "main", base_sha: str | None = None,
                         draft: bool | None = None, merged: bool | None = None, merge_sha: str | None = None,
                         state: str | None = None, html_url: str | None = None) -> dict[str, Any]:
    """A ``pull_request`` event from the fixture file of ``action`` (else the opened one): ``head_repo`` other than
    ``repo`` makes it a fork's. ``draft`` defaults to what the action implies (``converted_to_draft``: a draft),
    ``state`` to ``closed`` for ``closed`` and ``open`` otherwise; ``merged``/``merge_sha`` only fit ``closed``,
    whose only published examples are unmerged."""
    if (merged is not None or merge_sha is not None) and action != "closed":
        raise ValueError(f"merged/merge_sha only fit the action 'closed', not '{action}'")
    doc = _event(_pull_request_fixture(action), repo)
    doc["action"] = action
    pr = doc["pull_request"]
    doc["number"] = pr["number"] = number
    pr["url"] = f"https://api.github.com/repos/{repo}/pulls/{number}"
    pr["html_url"] = html_url or f"https://github.com/{repo}/pull/{number}"
    pr["state"] = state or ("closed" if action == "closed" else "open")
    pr["draft"] = action == "converted_to_draft" if draft is None else draft
    pr["user"] = {**pr["user"], "login": author, "type": user_type}
    pr["head"]["user"] = dict(pr["user"])
    doc["sender"] = dict(pr["user"])
    if association is None:
        pr.pop("author_association", None)
    else:
        pr["author_association"] = association
    pr["head"]["sha"] = sha
    if "after" in doc:
        doc["after"] = sha
    pr["head"]["ref"] = f"change-{number}"
    head = head_repo or repo
    pr["head"]["label"] = f"{head.split('/')[0]}:change-{number}"
    pr["head"]["repo"].update(full_name=head, name=head.split("/")[1], clone_url=clone_url,
                              html_url=f"https://github.com/{head}",
                              owner={"login": head.split("/")[0], "id": 1, "type": "User"})
    pr["base"]["ref"] = base_ref
    pr["base"]["label"] = f"{repo.split('/')[0]}:{base_ref}"
    pr["base"]["repo"]["full_name"] = repo
    if base_sha:
        pr["base"]["sha"] = base_sha
    if action == "closed":
        _close(pr, merged=merged, merge_sha=merge_sha, closed_at=_now())
    return doc


def _full_ref(ref: str) -> str:
    """``merge_group`` names branches by their full ref (``refs/heads/main``), the tests by their short name."""
    return ref if ref.startswith("refs/") else f"refs/heads/{ref}"


def merge_group_payload(*, head_sha: str, base_sha: str, base_ref: str = "main", head_ref: str | None = None,
                        repo: str = "acme/infra") -> dict[str, Any]:
    """A ``merge_group checks_requested`` event: the merge queue asks for checks of its temporary branch
    (``gh-readonly-queue/...``, named as GitHub names it unless ``head_ref`` is given)."""
    doc = _event("merge_group_checks_requested.json", repo)
    group = doc["merge_group"]
    short_base = _full_ref(base_ref).removeprefix("refs/heads/")
    group.update(head_sha=head_sha, base_sha=base_sha, base_ref=_full_ref(base_ref),
                 head_ref=_full_ref(head_ref or f"gh-readonly-queue/{short_base}/pr-1-{base_sha}"))
    group["head_commit"]["id"] = head_sha
    return doc


def _check_run_pull_request(repo: str, number: int, head_sha: str) -> dict[str, Any]:
    """The short form of a pull request a ``check_run`` event lists (no user, no state), based on the opened
    fixture's base commit like the pull requests ``pull_request_payload`` builds."""
    base = _fixture("pull_request_opened.json")["pull_request"]["base"]
    ref = {"id": base["repo"]["id"], "url": f"https://api.github.com/repos/{repo}", "name": repo.split("/")[1]}
    return {"url": f"https://api.github.com/repos/{repo}/pulls/{number}", "id": number, "number": number,
            "head": {"ref": f"change-{number}", "sha": head_sha, "repo": dict(ref)},
            "base": {"ref": base["ref"], "sha": base["sha"], "repo": dict(ref)}}


def check_run_rerequested_payload(*, head_sha: str, name: str, external_id: str, repo: str = "acme/infra",
                                  pr_number: int | None = None) -> dict[str, Any]:
    """A ``check_run rerequested`` event (someone pressed "Re-run" on a check): ``pr_number`` lists the pull
    request the check belongs to, as GitHub does for a branch of the same repository."""
    doc = _event("check_run_rerequested.json", repo)
    run = doc["check_run"]
    run.update(head_sha=head_sha, name=name, external_id=external_id)
    run["check_suite"].update(head_sha=head_sha, after=head_sha)
    pulls = [_check_run_pull_request(repo, pr_number, head_sha)] if pr_number is not None else []
    run["pull_requests"] = pulls
    run["check_suite"]["pull_requests"] = [dict(pull) for pull in pulls]
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


def push_payload(*, repo: str, ref: str, before: str, after: str, clone_url: str, default_branch: str = "main",
                 pusher: str = "carol") -> dict[str, Any]:
    """A ``push`` of ``ref`` (``refs/heads/...`` or ``refs/tags/...``) from ``before`` to ``after``, built from
    GitHub's published example of a branch push (or of a tag push) moved to ``repo``."""
    tag = ref.startswith("refs/tags/")
    doc = _event("push_tag.json" if tag else "push.json", repo)
    new = set(before) == {"0"}
    doc.update(ref=ref, before=before, after=after, created=new, deleted=False, forced=False,
               compare=f"https://github.com/{repo}/compare/{before[:12]}...{after[:12]}")
    doc["repository"].update(clone_url=clone_url, default_branch=default_branch, master_branch=default_branch)
    doc["pusher"] = {"name": pusher, "email": f"{pusher}@example.com"}
    doc["sender"]["login"] = pusher
    if doc.get("head_commit"):
        doc["head_commit"]["id"] = after
    doc["commits"] = [{**c, "id": after} for c in doc.get("commits") or []][:1]
    return doc
