"""Which runs a pull request started: the pointer ``/iac-ci apply``, ``approve``, ``reject``
and ``cancel`` follow, and what a push or a close cancels.

One item per pull request in the idempotency table (key ``github-pr#<owner/name>#<number>``,
the repository in lower case) holding its most recent runs, newest last, each with the commit it
ran. Written when a run is accepted, by a read and a put conditional on the version read, so
two runs accepted at once for one PR both end up listed (the loser reads again and retries).
Adding a run already listed changes nothing: a retried acceptance answers the same run id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_runtime.aws.clients import is_conditional_failure
from lambda_runtime.store.codec import from_item, to_item, value

MAX_RUNS = 20
# a run can wait for its reviewers up to its environment's 30-day timer plus its job timeout
PR_RUNS_TTL_SECONDS = 45 * 86400
MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class PrRun:
    run_id: str
    commit: str
    at: float
    command: str = "plan"


class PrRuns:
    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], float] = time.time):
        self._ddb, self._table, self._clock = dynamodb, table, clock

    @staticmethod
    def _key(repo: str, number: int) -> dict[str, Any]:
        return {"id": value(f"github-pr#{repo.lower()}#{int(number)}")}

    def add(self, repo: str, number: int, run_id: str, *, commit: str, command: str = "plan") -> None:
        for _ in range(MAX_ATTEMPTS):
            item = self._read(repo, number)
            version = int(item.get("version", 0)) if item else 0
            runs = list(item.get("runs", [])) if item else []
            if any(r.get("run_id") == run_id for r in runs):
                return
            now = self._clock()
            runs = [*runs, {"run_id": run_id, "commit": commit, "at": now, "command": command}][-MAX_RUNS:]
            fresh = {"runs": runs, "version": version + 1, "expiration": int(now) + PR_RUNS_TTL_SECONDS}
            try:
                self._ddb.put_item(
                    TableName=self._table, Item={**self._key(repo, number), **to_item(fresh)},
                    ConditionExpression="attribute_not_exists(id)" if not item else "version = :v",
                    **({"ExpressionAttributeValues": {":v": value(version)}} if item else {}),
                )
                return
            except Exception as exc:
                if not is_conditional_failure(exc):
                    raise
        raise RuntimeError(f"could not record run {run_id} for {repo}#{number}: too many concurrent writers")

    def recent(self, repo: str, number: int) -> list[PrRun]:
        """The PR's runs, newest first."""
        item = self._read(repo, number)
        runs = [PrRun(str(r["run_id"]), str(r.get("commit") or ""), float(r.get("at") or 0),
                      str(r.get("command") or "plan")) for r in (item or {}).get("runs", [])]
        return sorted(runs, key=lambda r: r.at, reverse=True)

    def _read(self, repo: str, number: int) -> dict[str, Any] | None:
        raw = self._ddb.get_item(TableName=self._table, Key=self._key(repo, number), ConsistentRead=True).get("Item")
        return from_item(raw) if raw else None
