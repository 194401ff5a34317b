"""GitHub webhooks: verify, check the payload's shape, deduplicate, queue. Nothing slow happens
before the answer (GitHub gives up after 10 seconds and redelivers).

The verified payload is written to ``webhooks/github/<delivery>.json``; its S3 event hands it
to the packaging function (``github.events``), which reads ``.iac-ci.yml`` at the PR's head
commit and starts the job. Each delivery is recorded (``github.deliveries``) so a redelivery
is answered without a second job.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.deliveries import Deliveries
from lambda_runtime.intake import signature
from lambda_runtime.intake.reply import Reply
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings

SIGNATURE_HEADER = "X-Hub-Signature-256"
PR_ACTIONS = {"opened", "synchronize", "reopened"}
DELIVERY_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class GitHubWebhooks:
    """``POST /webhooks/github``; ``secret`` reads a secret's value by id (cached by the caller)."""

    def __init__(self, settings: Settings, clients: AwsClients, secret: Callable[[str], str],
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clients = clients
        self._secret = secret
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
        action = payload.get("action") if isinstance(payload, dict) else None
        if event != "pull_request" or not isinstance(action, str) or action not in PR_ACTIONS:
            return Reply(200, {"ignored": f"{event} {payload.get('action') if isinstance(payload, dict) else ''}"})
        problem = _pull_request_problem(payload)
        if problem:
            return Reply(400, {"error": problem})
        if not self.deliveries.record(delivery):
            return Reply(200, {"duplicate": True, "delivery": delivery})
        try:
            self.clients.s3.put_object(Bucket=self.settings.internal_bucket,
                                       Key=layout.webhook_key("github", delivery), Body=raw,
                                       ContentType="application/json")
        except Exception:
            self.deliveries.forget(delivery)  # let GitHub's redelivery try again
            raise
        return Reply(202, {"queued": True, "delivery": delivery})


def _pull_request_problem(payload: dict[str, Any]) -> str | None:
    """What the packaging step relies on, checked here so a malformed event is a 400, not a poison message."""
    try:
        pr = payload["pull_request"]
        repo, number = payload["repository"]["full_name"], pr["number"]
        sha, clone_url = pr["head"]["sha"], pr["head"]["repo"]["clone_url"]
    except (KeyError, TypeError):
        return "not a pull_request payload"
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        return "repository.full_name is not owner/name"
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        return "pull_request.number is not a positive integer"
    if not isinstance(sha, str) or not SHA_RE.match(sha):
        return "pull_request.head.sha is not a commit id"
    if not isinstance(clone_url, str) or not clone_url.startswith(("https://", "ssh://", "git@", "file://")):
        return "pull_request.head.repo.clone_url is not a git URL"
    installation = payload.get("installation")
    if installation is not None and not (isinstance(installation, dict) and isinstance(installation.get("id"), int)):
        return "installation.id is not an integer"
    return None


def _get(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None
