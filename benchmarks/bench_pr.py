"""Pull-request figures: what choosing a push's orders costs, and what a lock costs.

1. ``github.selection.select`` for a monorepo of 1,000 Terraform roots (a plan and an apply order
   each) against a push of 3,000 changed files (GitHub's cap): the work done per webhook.
2. ``store.pr_locks`` on the embedded DynamoDB (moto over HTTP): the latency of taking a free lock,
   refreshing one the pull request holds, and releasing it, each one conditional transaction
   with its audit event; and 8 pull requests racing for one lock (exactly one wins).
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable

from lambda_runtime.github.selection import select
from lambda_runtime.job.model import Job

Row = Callable[..., None]


def selection(row: Row, roots: int = 1000, changed: int = 3000) -> None:
    orders = []
    for i in range(roots):
        orders.append({"name": f"plan-{i}", "cmds": ["true"], "dir": f"stacks/s{i:04d}"})
        orders.append({"name": f"apply-{i}", "cmds": ["true"], "dir": f"stacks/s{i:04d}", "command": "apply",
                       "depends_on": [f"plan-{i}"]})
    job = Job.model_validate({"name": "mono", "orders": orders})
    files = [f"stacks/s{i % roots:04d}/file{i}.tf" for i in range(0, changed * 7, 7)][:changed]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        chosen = select(job, command="plan", event="synchronize", changed=files)
        times.append(time.perf_counter() - start)
    row("pull requests", f"select: {roots} roots x {changed} changed files (ms)",
        f"{statistics.median(times) * 1000:.0f}", f"{len(chosen.names)} plan orders selected")


def locks(row: Row, samples: int = 40) -> None:
    from iac_ci.embedded.server import EmbeddedAws
    from lambda_runtime.aws.clients import AwsClients
    from lambda_runtime.schema.tables import LOCKS, ORDER_EVENTS
    from lambda_runtime.store.pr_locks import Holder, LockHeld, PrLocks

    aws = EmbeddedAws.start()
    os.environ.update(aws.env())  # this process's SDK talks to the embedded endpoint
    try:
        ddb = AwsClients(region=aws.region).dynamodb
        ddb.create_table(**LOCKS.create_table_kwargs("bench-locks"))
        ddb.create_table(**ORDER_EVENTS.create_table_kwargs("bench-events"))
        store = PrLocks(ddb, "bench-locks", "bench-events")
        pr = Holder.pull_request("acme/infra", 60)
        took, refreshed, released = [], [], []
        for i in range(samples):
            name = f"acme/infra:stacks/s{i}"
            for bucket, step in ((took, lambda: store.acquire(name, pr, run_id="r1", order="plan")),  # noqa: B023
                                 (refreshed, lambda: store.acquire(name, pr, run_id="r2", order="apply")),  # noqa: B023
                                 (released, lambda: store.release(name, pr.key, by="bench", reason="bench"))):  # noqa: B023
                start = time.perf_counter()
                step()
                bucket.append(time.perf_counter() - start)
        for label, values in (("take a free lock", took), ("refresh a held lock", refreshed),
                              ("release", released)):
            row("pull requests", f"lock: {label}, p50 (ms)", f"{statistics.median(values) * 1000:.1f}",
                "one conditional transaction with its audit event (embedded DynamoDB)")
        winners, losers = [], []

        def race(n: int) -> None:
            try:
                store.acquire("acme/infra:contended", Holder.pull_request("acme/infra", 100 + n), run_id=f"r{n}",
                              order="plan")
                winners.append(n)
            except LockHeld:
                losers.append(n)

        threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        row("pull requests", "lock: 8 PRs racing for one, all answered (ms)",
            f"{(time.perf_counter() - start) * 1000:.0f}", f"{len(winners)} holder, {len(losers)} told who holds it")
    finally:
        aws.stop()


def run(row: Row) -> None:
    selection(row)
    locks(row)
