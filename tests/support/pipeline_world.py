"""Pipeline triggers driven as GitHub drives them, for the pipeline tests: commits on a branch of a real git
repository the fake GitHub serves, the signed ``push`` webhook of each (``push_payload``, from GitHub's published
example), and the runs they start. A *world* is the dict of ``support.pr_world`` plus ``repos`` (repository name ->
its git repository) and ``heads`` (repository name -> the last commit pushed to main).
"""
from __future__ import annotations

import uuid
from typing import Any

from lambda_runtime.store.codec import from_item, value
from support.github_flow import commit_files, deliver, git, push_payload, wait_for
from support.pr_world import delivery_status


class Pushed:
    def __init__(self, world: dict[str, Any], delivery: str, sha: str):
        self.world, self.delivery, self.sha = world, delivery, sha
        self.outcome = wait_for(lambda: done_status(delivery_status(world, delivery)), what=f"push {delivery}")

    @property
    def run_ids(self) -> list[str]:
        return list(delivery_record(self.world, self.delivery).get("run_ids") or [])


def delivery_record(world: dict[str, Any], delivery: str) -> dict[str, Any]:
    """What the engine recorded of a delivery once processed: its outcome, and for a pipeline trigger the
    ``run_ids`` it started."""
    stack = world["stack"]
    item = stack.clients.dynamodb.get_item(TableName=stack.settings.idempotency_table, ConsistentRead=True,
                                           Key={"id": value(f"github-delivery#{delivery}")})["Item"]
    return from_item(item)


def done_status(status: str | None) -> str | None:
    return status if status not in (None, "queued", "processing") else None


def push(world: dict[str, Any], repo: str, files: dict[str, str], *, branch: str = "main",
         delete: tuple[str, ...] = ()) -> Pushed:
    """A commit on ``branch`` of ``repo`` and its signed ``push`` webhook."""
    path = world["repos"][repo]
    git(path, "checkout", "-q", branch)
    for name in delete:
        git(path, "rm", "-q", name)
    before = world["heads"][repo]
    sha = commit_files(path, files, f"change {uuid.uuid4().hex[:6]}")
    world["heads"][repo] = sha
    return send_push(world, repo, f"refs/heads/{branch}", before, sha)


def send_push(world: dict[str, Any], repo: str, ref: str, before: str, after: str) -> Pushed:
    delivery = str(uuid.uuid4())
    body = push_payload(repo=repo, ref=ref, before=before, after=after, clone_url=f"file://{world['repos'][repo]}")
    answer = deliver(world["url"], body, secret=world["webhook_key"], event="push", delivery=delivery)
    assert answer.status_code == 202, answer.text
    return Pushed(world, delivery, after)


def finished(world: dict[str, Any], run_id: str, timeout: float = 120) -> dict[str, Any]:
    return world["stack"].wait(run_id, timeout=timeout)


def downstream(world: dict[str, Any], run_id: str, count: int = 1) -> list[str]:
    """The runs the end of ``run_id`` started (recorded on it once they are accepted)."""
    stack = world["stack"]
    return wait_for(lambda: (lambda ids: ids if ids and len(ids) >= count else None)(
        stack.store.get_run(run_id).downstream_run_ids), timeout=60, what=f"the runs after {run_id}")
