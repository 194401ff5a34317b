"""GitHub webhooks: verify, deduplicate, queue. Nothing slow happens before the answer.

The verified payload is written to ``webhooks/github/<delivery>.json``; its S3 event hands it
to the packaging function (``GitHubEvents``), which reads ``.iac-ci.yml`` at the PR's head
commit and starts the job. Deliveries are recorded with a status so a redelivery of one
that is queued or done is answered without a second job, while one that failed can be
redelivered from GitHub's UI and is processed again.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from lambda_runtime.aws.clients import AwsClients, is_conditional_failure
from lambda_runtime.intake import signature
from lambda_runtime.intake.logic import Reply
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings
from lambda_runtime.store.codec import value

SIGNATURE_HEADER = "X-Hub-Signature-256"
PR_ACTIONS = {"opened", "synchronize", "reopened"}
DELIVERY_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
DELIVERY_TTL_SECONDS = 14 * 86400
PROCESSING_LEASE_SECONDS = 900


class Deliveries:
    """Delivery records in the idempotency table (key ``github-delivery#<id>``)."""

    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], float] = time.time):
        self._ddb, self._table, self._clock = dynamodb, table, clock

    @staticmethod
    def _key(delivery: str) -> dict[str, Any]:
        return {"id": value(f"github-delivery#{delivery}")}

    def record(self, delivery: str) -> bool:
        """True if this delivery is new (or failed before); False for a duplicate."""
        now = int(self._clock())
        nonce = uuid.uuid4().hex  # tells our own applied-but-unanswered write from someone else's
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={**self._key(delivery), "status": value("queued"), "received_at": value(now),
                      "expiration": value(now + DELIVERY_TTL_SECONDS), "writer": value(nonce)},
                ConditionExpression="attribute_not_exists(id) OR #s = :failed",
                ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":failed": value("failed")},
            )
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return self._written_by(delivery, nonce)
            raise

    def _written_by(self, delivery: str, nonce: str) -> bool:
        item = self._ddb.get_item(TableName=self._table, Key=self._key(delivery), ConsistentRead=True).get("Item")
        return bool(item) and item.get("writer", {}).get("S") == nonce

    def claim(self, delivery: str) -> bool:
        """Move queued -> processing (or take over a stale processing); False if done elsewhere."""
        now = int(self._clock())
        nonce = uuid.uuid4().hex
        try:
            self._ddb.update_item(
                TableName=self._table, Key=self._key(delivery),
                UpdateExpression="SET #s = :p, lease_until = :until, writer = :w",
                ConditionExpression="#s = :q OR (#s = :p AND lease_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":p": value("processing"), ":q": value("queued"), ":now": value(now),
                                           ":until": value(now + PROCESSING_LEASE_SECONDS), ":w": value(nonce)},
            )
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return self._written_by(delivery, nonce)
            raise

    def finish(self, delivery: str, status: str, **fields: Any) -> None:
        names = {"#s": "status", **{f"#f{i}": k for i, k in enumerate(fields)}}
        values = {":s": value(status), **{f":f{i}": value(v) for i, v in enumerate(fields.values())}}
        sets = ", ".join(["#s = :s", *(f"#f{i} = :f{i}" for i in range(len(fields)))])
        self._ddb.update_item(TableName=self._table, Key=self._key(delivery), UpdateExpression=f"SET {sets}",
                              ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def forget(self, delivery: str) -> None:
        self._ddb.delete_item(TableName=self._table, Key=self._key(delivery))


class GitHubWebhooks:
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


REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


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
