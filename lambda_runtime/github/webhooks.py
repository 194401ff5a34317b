"""GitHub webhooks: verify, check the payload's shape and repository, deduplicate, queue. Nothing
slow happens before the answer (GitHub gives up after 10 seconds and redelivers).

Accepted events: ``pull_request`` (``opened``, ``synchronize``, ``reopened``,
``ready_for_review``, ``converted_to_draft``, ``closed``), ``issue_comment`` ``created`` on a
pull request (``issue.pull_request`` present) whose body is an ``/iac-ci`` command
(``github.commands``), ``merge_group`` ``checks_requested`` and ``check_run`` ``rerequested``
of one of iac-ci's own check runs, and ``push`` of a branch or a tag (``on: push`` jobs; a push to the
default branch also reconciles schedules and chains). Every other event or action is answered
200 ``ignored``.
A repository the deployment policy does not list (``Policy.repositories``) is answered 403
naming it, and nothing is recorded or queued. A command comment older than
``COMMAND_MAX_AGE_SECONDS`` is ignored as stale (a replay of an old, signed comment).

The verified payload is written to ``webhooks/github/<delivery>.json``; its S3 event hands it
to the packaging function (``github.events``), which decides what it starts. Each delivery and
each body is recorded (``github.deliveries``), so a redelivery or a replayed body is answered
200 ``duplicate`` without a second job.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github import commands
from lambda_runtime.github.deliveries import Deliveries
from lambda_runtime.intake import signature
from lambda_runtime.intake.reply import Reply
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings

SIGNATURE_HEADER = "X-Hub-Signature-256"
PR_ACTIONS = {"opened", "synchronize", "reopened", "ready_for_review", "converted_to_draft", "closed"}
COMMAND_MAX_AGE_SECONDS = 3 * 86400  # GitHub lets a delivery be redelivered for 3 days
DELIVERY_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(\[bot\])?$")


class GitHubWebhooks:
    """``POST /webhooks/github``; ``secret`` reads a secret's value by id (cached by the caller)."""

    def __init__(self, settings: Settings, clients: AwsClients, secret: Callable[[str], str],
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clients = clients
        self._secret = secret
        self._clock = clock
        self.deliveries = Deliveries(clients.dynamodb, settings.idempotency_table, clock)

    def receive(self, raw: bytes, headers: Mapping[str, str]) -> Reply:
        if not self.settings.github_webhook_secret_id:
            return Reply(404, {"error": "GitHub webhooks are not configured on this stack"})
        if len(raw) > self.settings.max_body_bytes:
            return Reply(413, {"error": f"payload larger than {self.settings.max_body_bytes} bytes"})
        if not signature.verify(self._secret(self.settings.github_webhook_secret_id), raw,
                                _get(headers, SIGNATURE_HEADER)):
            return Reply(401, {"error": "bad or missing X-Hub-Signature-256"})
        event = _get(headers, "X-GitHub-Event") or ""
        delivery = _get(headers, "X-GitHub-Delivery") or ""
        if event == "ping":
            return Reply(200, {"pong": True})
        if not DELIVERY_RE.match(delivery):
            return Reply(400, {"error": "missing or malformed X-GitHub-Delivery"})
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            return Reply(400, {"error": "body is not valid JSON"})
        if not isinstance(payload, dict):
            return Reply(200, {"ignored": f"{event} "})
        repo = (payload.get("repository") or {}).get("full_name") if isinstance(payload.get("repository"), dict) \
            else None
        if isinstance(repo, str) and not self.settings.deployment_policy().allows_repository(repo):
            return Reply(403, {"error": f"repository {repo[:200]} is not allowed by this deployment's policy "
                                        "(repositories)"})
        action = payload.get("action")
        if event == "pull_request" and isinstance(action, str) and action in PR_ACTIONS:
            problem = _pull_request_problem(payload)
        elif event == "issue_comment" and action == "created" and _is_pr_command(payload):
            problem = _comment_problem(payload)
            if problem is None and _age(payload["comment"].get("created_at"), self._clock()) > COMMAND_MAX_AGE_SECONDS:
                return Reply(200, {"ignored": "issue_comment created: a command older than "
                                              f"{COMMAND_MAX_AGE_SECONDS // 86400} days"})
        elif event == "merge_group" and action == "checks_requested":
            problem = _merge_group_problem(payload)
        elif event == "check_run" and action == "rerequested" and _is_our_check(payload):
            problem = _check_run_problem(payload)
        elif event == "push":
            if payload.get("deleted"):
                return Reply(200, {"ignored": "push deleting a ref"})
            problem = _push_problem(payload)
        else:
            return Reply(200, {"ignored": f"{event} {action if isinstance(action, str) else ''}"})
        if problem:
            return Reply(400, {"error": problem})
        body_sha256 = hashlib.sha256(raw).hexdigest()
        if not self.deliveries.record(delivery, body_sha256):
            return Reply(200, {"duplicate": True, "delivery": delivery})
        try:
            self.clients.s3.put_object(Bucket=self.settings.internal_bucket,
                                       Key=layout.webhook_key("github", delivery), Body=raw,
                                       ContentType="application/json")
        except Exception:
            self.deliveries.forget(delivery, body_sha256)  # let GitHub's redelivery try again
            raise
        return Reply(202, {"queued": True, "delivery": delivery})


def _pull_request_problem(payload: dict[str, Any]) -> str | None:
    """What the packaging step relies on, checked here so a malformed event is a 400, not a poison message."""
    try:
        pr = payload["pull_request"]
        repo, number = payload["repository"]["full_name"], pr["number"]
        sha = pr["head"]["sha"]
        # a closed pull request's fork may be gone: only a run needs the head's clone URL
        clone_url = (pr["head"].get("repo") or {}).get("clone_url") if payload.get("action") == "closed" \
            else pr["head"]["repo"]["clone_url"]
    except (KeyError, TypeError, AttributeError):
        return "not a pull_request payload"
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        return "repository.full_name is not owner/name"
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        return "pull_request.number is not a positive integer"
    if not isinstance(sha, str) or not SHA_RE.match(sha):
        return "pull_request.head.sha is not a commit id"
    if not _git_url(clone_url) and not (payload.get("action") == "closed" and clone_url is None):
        return "pull_request.head.repo.clone_url is not a git URL"
    if payload.get("action") == "closed" and pr.get("merged"):
        merge_sha = pr.get("merge_commit_sha")
        if not isinstance(merge_sha, str) or not SHA_RE.match(merge_sha):
            return "pull_request.merge_commit_sha is not a commit id"
        if not _git_url((pr.get("base", {}).get("repo") or {}).get("clone_url")):
            return "pull_request.base.repo.clone_url is not a git URL"
    return _installation_problem(payload)


def _git_url(url: Any) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "ssh://", "git@", "file://"))


def _merge_group_problem(payload: dict[str, Any]) -> str | None:
    try:
        repo, group = payload["repository"]["full_name"], payload["merge_group"]
        head, base = group["head_sha"], group.get("base_sha")
    except (KeyError, TypeError):
        return "not a merge_group payload"
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        return "repository.full_name is not owner/name"
    if not isinstance(head, str) or not SHA_RE.match(head) or (base is not None and not (
            isinstance(base, str) and SHA_RE.match(base))):
        return "merge_group.head_sha or base_sha is not a commit id"
    if not _git_url(payload["repository"].get("clone_url")):
        return "repository.clone_url is not a git URL"
    return _installation_problem(payload)


def _push_problem(payload: dict[str, Any]) -> str | None:
    try:
        repo, ref, after = payload["repository"]["full_name"], payload["ref"], payload["after"]
        before = payload.get("before")
    except (KeyError, TypeError):
        return "not a push payload"
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        return "repository.full_name is not owner/name"
    if not isinstance(ref, str) or not ref.startswith(("refs/heads/", "refs/tags/")) or len(ref) > 300:
        return "ref is not a branch or a tag"
    if not isinstance(after, str) or not SHA_RE.match(after) or (before is not None and not (
            isinstance(before, str) and SHA_RE.match(before))):
        return "after or before is not a commit id"
    if not _git_url(payload["repository"].get("clone_url")):
        return "repository.clone_url is not a git URL"
    return _installation_problem(payload)


def _is_our_check(payload: dict[str, Any]) -> bool:
    check = payload.get("check_run")
    return isinstance(check, dict) and str(check.get("name") or "").startswith("iac-ci/")


def _check_run_problem(payload: dict[str, Any]) -> str | None:
    try:
        repo, check = payload["repository"]["full_name"], payload["check_run"]
        head, login = check["head_sha"], payload["sender"]["login"]
    except (KeyError, TypeError):
        return "not a check_run payload"
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        return "repository.full_name is not owner/name"
    if not isinstance(head, str) or not SHA_RE.match(head):
        return "check_run.head_sha is not a commit id"
    if not isinstance(login, str) or not LOGIN_RE.match(login):
        return "sender.login is not a GitHub login"
    return _installation_problem(payload)


def _is_pr_command(payload: dict[str, Any]) -> bool:
    issue, comment = payload.get("issue"), payload.get("comment")
    return (isinstance(issue, dict) and isinstance(issue.get("pull_request"), dict) and isinstance(comment, dict)
            and commands.is_command(comment.get("body")))


def _comment_problem(payload: dict[str, Any]) -> str | None:
    try:
        repo, number = payload["repository"]["full_name"], payload["issue"]["number"]
        comment_id, login = payload["comment"]["id"], payload["comment"]["user"]["login"]
    except (KeyError, TypeError):
        return "not an issue_comment payload"
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        return "repository.full_name is not owner/name"
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        return "issue.number is not a positive integer"
    if not isinstance(comment_id, int) or isinstance(comment_id, bool):
        return "comment.id is not an integer"
    if not isinstance(login, str) or not LOGIN_RE.match(login):
        return "comment.user.login is not a GitHub login"
    created = payload["comment"].get("created_at")
    if not isinstance(created, str) or parse_time(created) is None:
        return "comment.created_at is not a timestamp"
    return _installation_problem(payload)


def _installation_problem(payload: dict[str, Any]) -> str | None:
    installation = payload.get("installation")
    if installation is not None and not (isinstance(installation, dict) and isinstance(installation.get("id"), int)):
        return "installation.id is not an integer"
    return None


def parse_time(text: Any) -> float | None:
    """A GitHub timestamp (``2026-12-01T15:00:00Z``) as epoch seconds; None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None


def _age(text: Any, now: float) -> float:
    at = parse_time(text)
    return float("inf") if at is None else now - at


def _get(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None
