"""Pipeline figures: what a matrix, a schedule reconcile and a chain cost.

1. Validating a job whose matrices expand to the 5,000-order limit (20 matrix orders x 250
   instances, each depending on every instance of the one before): the work intake does per submission.
2. ``dag.plan`` over that expanded graph with half the instances finished: one orchestrator step's
   skip cascade and ready set.
3. ``pipelines.schedules.Schedules.reconcile`` and ``pipelines.chains.Chains.reconcile`` on the
   embedded Scheduler and DynamoDB (moto over HTTP): a repository's 10 schedules and 10
   subscriptions created, then reconciled unchanged (the cost of every push to the default branch).
4. ``Chains.subscribers`` + ``would_loop`` over a chain of 10 repositories: a run's end looking up
   its followers, and a new subscription's loop check.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from lambda_runtime.job import dag
from lambda_runtime.job.validate import parse_job
from lambda_runtime.schema.status import OrderStatus

Row = Callable[..., None]


def _matrix_job(stages: int = 20, width: int = 250) -> dict[str, object]:
    orders: list[dict[str, object]] = []
    for s in range(stages):
        order: dict[str, object] = {"name": f"stage{s}", "cmds": ["true"], "target": "lambda",
                                    "matrix": {"shard": [str(i) for i in range(width)]}}
        if s:
            order["depends_on"] = [f"stage{s - 1}"]
        orders.append(order)
    return {"name": "wide", "orders": orders}


def matrix(row: Row) -> None:
    raw = _matrix_job()
    times = []
    job = None
    for _ in range(3):
        start = time.perf_counter()
        job = parse_job(raw)
        times.append(time.perf_counter() - start)
    assert job is not None
    row("pipelines", "validate: 20 matrices x 250 instances, each stage after all of the last (ms)",
        f"{statistics.median(times) * 1000:.0f}", f"{len(job.orders)} orders, "
        f"{sum(len(o.depends_on) for o in job.orders)} dependency edges")
    half = {o.name for o in job.orders[: len(job.orders) // 2]}
    nodes = {o.name: dag.NodeState(OrderStatus.SUCCEEDED if o.name in half else OrderStatus.QUEUED,
                                   True, tuple(o.depends_on), o.run_if) for o in job.orders}
    steps = []
    for _ in range(5):
        start = time.perf_counter()
        plan = dag.plan(nodes)
        steps.append(time.perf_counter() - start)
    row("pipelines", "dag.plan over that graph, half finished (ms)", f"{statistics.median(steps) * 1000:.0f}",
        f"{len(plan.ready)} ready")


def reconcile(row: Row) -> None:
    from iac_ci.embedded.server import EmbeddedAws
    from lambda_runtime.aws.clients import AwsClients
    from lambda_runtime.pipelines.chains import Chains, Subscriber, Subscription
    from lambda_runtime.pipelines.schedules import ScheduledJob, Schedules
    from lambda_runtime.schema.tables import IDEMPOTENCY

    aws = EmbeddedAws.start()
    os.environ.update(aws.env())
    try:
        clients = AwsClients(region=aws.region)
        clients.scheduler.create_schedule_group(Name="bench")
        clients.dynamodb.create_table(**IDEMPOTENCY.create_table_kwargs("bench-idem"))
        schedules = Schedules(clients.scheduler, "bench", "arn:aws:sqs:us-east-1:123456789012:q",
                              "arn:aws:iam::123456789012:role/r")
        chains = Chains(clients.dynamodb, "bench-idem")
        repo = "acme/infra"
        wanted = [ScheduledJob(repo, f"job{i}", f"{i} 6 * * *") for i in range(10)]
        subs = [Subscription(f"acme/up{i}", "build", Subscriber(repo, f"job{i}", ("succeeded",)))
                for i in range(10)]
        for label, call in (
                ("schedules: create 10 (ms)", lambda: schedules.reconcile(repo, wanted)),
                ("schedules: reconcile 10 unchanged (ms)", lambda: schedules.reconcile(repo, wanted)),
                ("chains: write 10 subscriptions (ms)", lambda: chains.reconcile(repo, subs)),
                ("chains: reconcile 10 unchanged (ms)", lambda: chains.reconcile(repo, subs))):
            start = time.perf_counter()
            call()
            row("pipelines", label, f"{(time.perf_counter() - start) * 1000:.0f}",
                "embedded Scheduler / DynamoDB over HTTP")
        # a chain of 10 repositories: r0 -> r1 -> ... -> r9
        for i in range(9):
            chains.reconcile(f"acme/r{i + 1}", [Subscription(f"acme/r{i}", "j", Subscriber(f"acme/r{i + 1}", "j",
                                                                                          ("succeeded",)))])
        lookups = []
        for _ in range(20):
            start = time.perf_counter()
            chains.subscribers("acme/r0", "j")
            lookups.append(time.perf_counter() - start)
        row("pipelines", "chains: followers of a run's job, p50 (ms)", f"{statistics.median(lookups) * 1000:.1f}",
            "one consistent GetItem")
        start = time.perf_counter()
        loop = chains.would_loop(Subscription("acme/r9", "j", Subscriber("acme/r0", "j", ("succeeded",))))
        row("pipelines", "chains: loop check across 10 repositories (ms)",
            f"{(time.perf_counter() - start) * 1000:.0f}", f"loop found: {' -> '.join(loop or [])[:60]}…")
    finally:
        aws.stop()


def run(row: Row) -> None:
    matrix(row)
    reconcile(row)
