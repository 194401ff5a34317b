"""A pull request of ``acme/infra`` driven as GitHub drives the engine, for the pull-request workflow tests.

The tests of the PR workflow (``tests/embedded/test_github_pr_workflow.py``, ``tests/evidence/test_pr_attacks.py``,
``tests/embedded/test_github_trust.py``) all run the engine the way ``iac-ci serve`` does for GitHub: an
``EmbeddedStack`` whose settings point at a fake GitHub, its webhook and token secrets stored, an ``HttpApi`` in
front (``github_stack``). Two of them also drive one pull request the same way: a branch with commits in a real git
repository, the fake GitHub's view of it (``pull_files``, ``pulls``), signed webhooks for its events and comments,
and waiting for the replies and runs that follow (``PullRequest``). They live here once so that every such test
drives the engine alike.

A *world* is the dict a test module's fixture yields; ``PullRequest`` and the helpers read ``stack``
(``EmbeddedStack``), ``url`` (the ``HttpApi``'s), ``fake`` (``FakeGitHub``), ``repo`` (the git repository of
``acme/infra``, its clone), ``main`` (the commit a pull request is based on) and ``webhook_key`` from it.
"""
from __future__ import annotations

import uuid
from typing import Any

from iac_ci.embedded.http_api import HttpApi
from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.github.pr_runs import PrRuns
from lambda_runtime.policy.model import load_policy
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import RunSnapshot
from lambda_runtime.store.codec import from_item, value
from lambda_runtime.store.pr_locks import PrLocks
from support.fakes.github_server import FakeGitHub
from support.github_flow import (
    api_pull_request,
    comment_payload,
    commit_files,
    deliver,
    git,
    pull_request_payload,
    wait_for,
)

REPO = "acme/infra"


def github_stack(aws: Any, fake: FakeGitHub, policy: dict[str, Any], *, webhook_key: str, token: str,
                 prefix: str) -> tuple[EmbeddedStack, HttpApi]:
    """An engine for GitHub, started: its deployment ``policy``, the fake's API, the webhook key and token in
    Secrets Manager (under ``prefix``, the stack's own), writes to GitHub barely throttled, and an ``HttpApi``
    in front. The caller stops the ``HttpApi`` and closes the stack."""
    hook_id, token_id = f"iac-ci-engine/{prefix}/github-webhook", f"iac-ci-engine/{prefix}/github-token"
    stack = EmbeddedStack(aws, prefix=prefix, settings_overrides={
        "policy": load_policy(policy).to_json(), "github_webhook_secret_id": hook_id,
        "github_token_secret_id": token_id, "github_api_url": fake.url, "github_seconds_between_writes": 0.01,
        "vcs_update_interval_seconds": 0, "watchdog_grace_seconds": 5})
    stack.clients.secrets.create_secret(Name=hook_id, SecretString=webhook_key)
    stack.clients.secrets.create_secret(Name=token_id, SecretString=token)
    stack.start()
    return stack, HttpApi(stack.api).start()


class PullRequest:
    """One pull request of acme/infra: a branch (``change-<number>``) with changed files, and its webhooks.

    ``clone_url`` is where its head is cloned from (the world's repository unless given: a fork's may point
    elsewhere); ``author`` goes to ``pull_request_payload`` (``head_repo``, ``author``, ``association``...)."""

    def __init__(self, world: dict[str, Any], number: int, files: dict[str, str], *, draft: bool = False,
                 clone_url: str | None = None, **author: Any):
        self.world, self.number, self.draft = world, number, draft
        self.clone_url, self.author = clone_url or f"file://{world['repo']}", author
        self.branch = f"change-{number}"
        self.files: list[str] = []  # every file the pull request changed, over all its pushes
        self.sha = ""
        self.push(files)

    def push(self, files: dict[str, str], *, send: bool = False, delete: tuple[str, ...] = ()) -> str:
        """A commit of ``files`` (and ``delete``) on the branch, made off main by the first push, and the fake
        GitHub's view of the pull request updated; ``send`` tells the engine (``synchronize``). The head commit."""
        repo = self.world["repo"]
        if self.sha:
            git(repo, "checkout", "-q", self.branch)
        else:
            git(repo, "checkout", "-q", "-B", self.branch, "main")
        for path in delete:
            git(repo, "rm", "-q", path)
        self.sha = commit_files(repo, files, f"change {self.number}")
        git(repo, "checkout", "-q", "main")
        self.files = sorted(set(self.files) | set(files))
        fake: FakeGitHub = self.world["fake"]
        fake.pull_files[(REPO, self.number)] = list(self.files)
        fake.pulls[(REPO, self.number)] = api_pull_request(self.event("opened"))
        if send:
            self.send("synchronize")
        return self.sha

    def event(self, action: str, **more: Any) -> dict[str, Any]:
        """The ``pull_request`` event of ``action`` at the head commit, based on the world's ``main``."""
        doc = pull_request_payload(number=self.number, sha=self.sha, clone_url=self.clone_url, action=action,
                                   base_sha=self.world["main"], draft=self.draft, **self.author, **more)
        doc["pull_request"]["base"]["repo"]["clone_url"] = f"file://{self.world['repo']}"
        return doc

    def send(self, action: str, **more: Any) -> str:
        """Deliver the event of ``action``; its delivery id."""
        delivery = str(uuid.uuid4())
        resp = deliver(self.world["url"], self.event(action, **more), secret=self.world["webhook_key"],
                       delivery=delivery)
        assert resp.status_code == 202, resp.text
        return delivery

    def comment(self, body: str, login: str = "carol") -> dict[str, Any]:
        """Deliver a comment of ``login`` on the pull request; the ``issue_comment`` event."""
        doc = comment_payload(number=self.number, body=body, login=login)
        resp = deliver(self.world["url"], doc, secret=self.world["webhook_key"], event="issue_comment")
        assert resp.status_code == 202, resp.text
        return doc

    def reply_to(self, doc: dict[str, Any], timeout: float = 60) -> str:
        """The body of the engine's reply to the comment of ``doc``, once posted."""
        marker = f"<!-- iac-ci:reply:{doc['comment']['id']} -->"
        found = wait_for(lambda: next((c["body"] for c in self.world["fake"].comments_on(REPO, self.number)
                                       if c["body"].startswith(marker)), None), timeout=timeout, what="the reply")
        return str(found)

    def runs(self, command: str | None = None) -> list[Any]:
        """The pull request's runs, newest first (those of ``command`` only, when given)."""
        stack: EmbeddedStack = self.world["stack"]
        refs = PrRuns(stack.clients.dynamodb, stack.settings.idempotency_table).recent(REPO, self.number)
        return [r for r in refs if command is None or r.command == command]

    def new_run(self, before: int, command: str = "plan") -> str:
        """The id of a ``command`` run started after the ``before`` runs the pull request had."""
        ref = wait_for(lambda: next((r for r in self.runs()[: max(0, len(self.runs()) - before)]
                                     if r.command == command), None), what=f"a new {command} run")
        return str(ref.run_id)

    def first_run(self, command: str = "plan") -> str:
        """The id of the newest ``command`` run, once there is one."""
        return str(wait_for(lambda: next(iter(self.runs(command)), None), what=f"a {command} run").run_id)

    def finished(self, run_id: str, timeout: float = 120) -> RunSnapshot:
        """The run, finalized."""
        stack: EmbeddedStack = self.world["stack"]
        stack.wait(run_id, timeout=timeout)  # the done object comes first, then the run item's final status
        return wait_for(lambda: (lambda snap: snap if snap.run and snap.run.finalized else None)(
            stack.store.load(run_id)), timeout=30, what=f"run {run_id} finalized")


def locks(world: dict[str, Any]) -> PrLocks:
    """The engine's locks."""
    stack: EmbeddedStack = world["stack"]
    return PrLocks(stack.clients.dynamodb, stack.settings.locks_table, stack.settings.events_table)


def delivery_status(world: dict[str, Any], delivery: str) -> str | None:
    """What the engine recorded of a webhook delivery (``None`` before it did)."""
    stack: EmbeddedStack = world["stack"]
    item = stack.clients.dynamodb.get_item(TableName=stack.settings.idempotency_table,
                                           Key={"id": value(f"github-delivery#{delivery}")}, ConsistentRead=True)
    return str(from_item(item["Item"])["status"]) if item.get("Item") else None


def log_of(world: dict[str, Any], run_id: str, order: str) -> str:
    """The log of ``order`` in run ``run_id``."""
    stack: EmbeddedStack = world["stack"]
    body = stack.clients.s3.get_object(Bucket=stack.settings.internal_bucket, Key=layout.log_key(run_id, order))
    return str(body["Body"].read().decode(errors="replace"))


def statuses(world: dict[str, Any], sha: str) -> list[dict[str, Any]]:
    """The commit statuses the fake GitHub recorded for ``sha``, oldest first."""
    return [s for s in list(world["fake"].statuses) if s["sha"] == sha]
