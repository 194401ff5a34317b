"""``on: after`` subscriptions: which jobs (of this or another repository) start when a job's run
ends. Recorded from the default branch's config when it changes (``github.pipeline_events``),
read when a run ends, so a run's end needs one read, whatever repository its followers live in.

Items in the idempotency table (never expiring):
- ``chain#<upstream repo>#<upstream job>``: ``subs``, a map ``<repo>#<job>`` -> the subscriber;
- ``chains-of#<repo>``: ``upstreams``, the ``chain#`` keys the repository's jobs subscribe to,
  so a reconcile removes the subscriptions its config no longer has.

A loop across repositories (A's run starts B's, B's starts A's) is refused when the second
subscription would close it; a run also carries the chain of jobs that led to it, and a job
already on it never starts again (``MAX_CHAIN``), should the subscriptions change in between.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_CHAIN = 10
MAX_WALK = 200


def node(repo: str, job: str) -> str:
    return f"{repo.lower()}#{job}"


@dataclass(frozen=True)
class Subscriber:
    repo: str
    job: str
    statuses: tuple[str, ...]
    branches: tuple[str, ...] | None = None
    installation_id: int | None = None

    @property
    def key(self) -> str:
        return node(self.repo, self.job)

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> Subscriber:
        data = json.loads(text)
        return cls(repo=data["repo"], job=data["job"], statuses=tuple(data["statuses"]),
                   branches=tuple(data["branches"]) if data.get("branches") is not None else None,
                   installation_id=data.get("installation_id"))


@dataclass(frozen=True)
class Subscription:
    upstream_repo: str
    upstream_job: str
    subscriber: Subscriber

    @property
    def upstream_key(self) -> str:
        return "chain#" + node(self.upstream_repo, self.upstream_job)


@dataclass
class Chains:
    dynamodb: Any
    table: str
    _cache: dict[str, list[Subscriber]] = field(default_factory=dict)

    def subscribers(self, repo: str, job: str) -> list[Subscriber]:
        item = self.dynamodb.get_item(TableName=self.table, Key={"id": {"S": "chain#" + node(repo, job)}},
                                      ConsistentRead=True).get("Item") or {}
        subs = (item.get("subs") or {}).get("M") or {}
        return [Subscriber.from_text(v["S"]) for _, v in sorted(subs.items())]

    def would_loop(self, subscription: Subscription) -> list[str] | None:
        """The loop the subscription would close (downstream ... upstream), or None: walks who
        follows the subscriber's job, and so on, looking for the upstream job."""
        target = node(subscription.upstream_repo, subscription.upstream_job)
        start = subscription.subscriber.key
        if start == target:
            return [start, start]
        paths = {start: [start]}
        todo = [start]
        seen = 0
        while todo and seen < MAX_WALK:
            current = todo.pop(0)
            seen += 1
            repo, _, job = current.partition("#")
            for sub in self.subscribers(repo, job):
                if sub.key == target:
                    return [target, *paths[current], target]
                if sub.key not in paths:
                    paths[sub.key] = [*paths[current], sub.key]
                    todo.append(sub.key)
        return None

    def reconcile(self, repo: str, wanted: Iterable[Subscription]) -> dict[str, int]:
        """Make the repository's subscriptions exactly ``wanted`` (all of them its own jobs)."""
        wanted = list(wanted)
        mine_key = {"id": {"S": f"chains-of#{repo.lower()}"}}
        item = self.dynamodb.get_item(TableName=self.table, Key=mine_key, ConsistentRead=True).get("Item") or {}
        before = set((item.get("upstreams") or {}).get("SS") or [])
        keep = {s.upstream_key for s in wanted}
        removed = added = 0
        prefix = f"{repo.lower()}#"
        for upstream in sorted(before):  # drop every subscription of ours there; re-added below if still wanted
            current = self.dynamodb.get_item(TableName=self.table, Key={"id": {"S": upstream}},
                                             ConsistentRead=True).get("Item") or {}
            ours = [k for k in ((current.get("subs") or {}).get("M") or {}) if k.startswith(prefix)]
            stale = [k for k in ours if not any(s.upstream_key == upstream and s.subscriber.key == k for s in wanted)]
            if stale:
                names = {f"#k{i}": k for i, k in enumerate(stale)}
                self.dynamodb.update_item(TableName=self.table, Key={"id": {"S": upstream}},
                                          UpdateExpression="REMOVE " + ", ".join(f"subs.{n}" for n in names),
                                          ExpressionAttributeNames=names)
                removed += len(stale)
        for sub in wanted:
            self.dynamodb.update_item(
                TableName=self.table, Key={"id": {"S": sub.upstream_key}},
                UpdateExpression="SET subs = if_not_exists(subs, :empty)", ExpressionAttributeValues={
                    ":empty": {"M": {}}})
            self.dynamodb.update_item(
                TableName=self.table, Key={"id": {"S": sub.upstream_key}}, UpdateExpression="SET subs.#k = :v",
                ExpressionAttributeNames={"#k": sub.subscriber.key},
                ExpressionAttributeValues={":v": {"S": sub.subscriber.to_text()}})
            added += 1
        if keep:
            self.dynamodb.put_item(TableName=self.table, Item={**mine_key, "upstreams": {"SS": sorted(keep)}})
        elif item:
            self.dynamodb.delete_item(TableName=self.table, Key=mine_key)
        return {"removed": removed, "written": added}
