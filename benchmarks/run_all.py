"""`make bench`: every figure the project publishes, printed as one table.

0. start-up: the wall time of `iac-ci run` for a one-order job;
1. control-plane overhead: `iac-ci run` vs `make -j10` on a 10x10 DAG of `sleep 1` (lambda and
   codebuild targets), and where a layer's transition goes;
1b. scale: 100, 1,000 and 5,000 no-op orders in chains of 10, wall and peak memory;
2. AWS API calls per order, by service and action, for 10, 100 and 1000 no-op orders,
   counted at the embedded endpoint (queue polling excluded: the event source mapping's);
3. intake acknowledgement latency for a 500-order job (p50/p95 of 30 submissions);
4. import time of each Lambda entrypoint vs a bare boto3 + pydantic + powertools import;
5. estimated AWS cost of the control plane per 1,000 orders, from the counted calls;
6. masking throughput and the sandbox sweep per order;
7. pull requests: selecting a push's orders in a 1,000-root monorepo, and a lock's cost;
8. operations: `iac-ci logs --follow` latency, `iac-ci init` on 200 roots, certificate rotation, EMF writes.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

import scale  # noqa: E402
from bench_masking import run as masking  # noqa: E402
from bench_operations import run as operations  # noqa: E402
from bench_pipelines import run as pipelines  # noqa: E402
from bench_pr import run as pull_requests  # noqa: E402
from transitions import run as transitions  # noqa: E402

# US East (N. Virginia) list prices, 2026; control plane only (workers' own compute excluded)
PRICES = {
    "dynamodb_write_unit": 1.25 / 1e6,  # on-demand WRU
    "dynamodb_read_call": 0.25 / 1e6 * 2,  # ~2 RRU per strongly consistent read/query of small items
    "s3_put_list": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get_head": 0.0004 / 1000,
    "sqs_request": 0.40 / 1e6,  # includes the event source mapping's polling
    "sfn_transition": 0.025 / 1000,  # standard workflows; a watchdog execution uses ~4 transitions
    "kms_request": 0.03 / 10000,
    "secrets_request": 0.05 / 10000,
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm": 0.0000133334,
}
ENTRYPOINTS = ["lambda_runtime.intake.handler", "lambda_runtime.packaging.handler",
               "lambda_runtime.orchestrator.handler", "lambda_runtime.worker.handler"]
BASELINE = "boto3, pydantic, aws_lambda_powertools"


def row(section: str, metric: str, value: str, note: str = "") -> None:
    print(f"| {section} | {metric} | {value} | {note} |")


def overhead() -> None:
    import tempfile

    import yaml
    from dag_overhead import dag, makefile, timed

    for target, goal in (("lambda", 1.2), ("codebuild", 1.5)):
        orders = dag(10, 10, target)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "job.yaml").write_text(yaml.safe_dump({"name": "bench", "orders": orders}))
            (Path(tmp) / "Makefile").write_text(makefile(orders))
            make_s, _ = timed(["make", "-s", "-j10", "-C", tmp, "all"])
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
            run_s, proc = timed([str(Path(sys.executable).with_name("iac-ci")), "run", str(Path(tmp) / "job.yaml"),
                                 "--quiet"], env=env)
        row("overhead", f"10x10 DAG of sleep 1, {target}: iac-ci run / make -j10",
            f"{run_s / make_s:.2f}", f"{run_s:.1f} s / {make_s:.1f} s, exit {proc.returncode}; target <= {goal}")


def startup() -> None:
    runs = scale.one_order()
    best = min(r.wall_s for r in runs)
    row("start-up", "one-order `true` job: wall of iac-ci run, best of 3 (s)", f"{best:.2f}",
        f"all: {', '.join(f'{r.wall_s:.2f}' for r in runs)}; target <= 1.5")


def scaling(sizes: list[int]) -> None:
    """No-op orders in chains of 10 (lambda): wall and peak memory of the whole process tree."""
    measured = {}
    for n in sizes:
        m = measured[n] = scale.run_job(scale.chains(n // 10), name=f"chains{n}")
        row("scale", f"{n} no-op orders (chains of 10): wall (s) / peak memory (MiB)",
            f"{m.wall_s:.1f} / {m.peak_rss_bytes / 2**20:.0f}", f"exit {m.exit_code}")
    for small, big in zip(sizes, sizes[1:], strict=False):
        a, b = measured[small], measured[big]
        row("scale", f"{big} vs {small} orders ({big // small}x): time x / memory x",
            f"{b.wall_s / a.wall_s:.1f} / {b.peak_rss_bytes / max(a.peak_rss_bytes, 1):.1f}",
            "linear would be the order ratio or less")


def api_calls(sizes: list[int]) -> Counter:
    from iac_ci.embedded.server import EmbeddedAws
    from iac_ci.embedded.stack import EmbeddedStack

    aws = EmbeddedAws.spawn(count_calls=True).ready()  # counted in the server's process: every caller
    last: Counter = Counter()
    try:
        for n in sizes:
            stack = EmbeddedStack(aws, prefix=f"b{n}")
            with stack:
                aws.reset_calls()
                code, body = stack.submit({"name": "noop", "username": "bench", "orders": [
                    {"name": f"o{i}", "target": "lambda", "cmds": ["true"]} for i in range(n)]})
                assert code == 202, body
                # woken when the run is finalized: the benchmark's own look at the done object is one call,
                # not one per second (the engine's calls are the figure)
                done = stack.wait(body["run_id"], timeout=3600, poll=60)
                counted = aws.calls()
                calls = counted.engine_calls()
                total = sum(calls.values())
                row("api calls", f"{n} orders: per order", f"{total / n:.2f}",
                    f"{total} calls, {counted.write_units} DynamoDB WRU, status {done['status']}")
                last = Counter(calls)
                last["_wru"] = counted.write_units
                last["_sqs_polling"] = counted.polling()
                last["_n"] = n
            stack.remove_own_files()
        n = last["_n"]
        for (service, action), count in sorted(((k, v) for k, v in last.items() if isinstance(k, tuple)),
                                               key=lambda kv: -kv[1]):
            row("api calls", f"{n} orders: {service}.{action}", f"{count / n:.2f} per order")
    finally:
        aws.stop()
    return last


def intake_latency(orders: int = 500, submissions: int = 30) -> None:
    from iac_ci.embedded.server import EmbeddedAws
    from iac_ci.embedded.stack import EmbeddedStack

    aws = EmbeddedAws.start()
    try:
        stack = EmbeddedStack(aws, prefix="lat")  # pumps not started: intake alone
        job = {"name": "lat", "username": "bench", "orders": [
            {"name": f"o{i}", "cmds": ["terraform plan"], "depends_on": [f"o{i - 1}"] if i % 10 else []}
            for i in range(orders)]}
        times = []
        for _ in range(submissions):
            t = time.perf_counter()
            code, _ = stack.submit(job)
            times.append((time.perf_counter() - t) * 1000)
            assert code == 202
        stack.remove_own_files()
    finally:
        aws.stop()
    times.sort()
    row("intake", f"ack latency, {orders}-order job, p50 (ms)", f"{statistics.median(times):.0f}")
    row("intake", f"ack latency, {orders}-order job, p95 (ms)", f"{times[int(0.95 * (len(times) - 1))]:.0f}",
        "target <= 300")


def import_times(repeat: int = 5) -> None:
    def measure(stmt: str) -> float:
        code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
        runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout) for _ in range(repeat)]
        return statistics.median(runs) * 1000

    base = measure(f"import {BASELINE}")
    row("cold start", "baseline import (ms)", f"{base:.0f}", BASELINE)
    for module in ENTRYPOINTS:
        ms = measure(f"import {module}")
        row("cold start", f"{module} (ms)", f"{ms:.0f}", f"{ms / base:.2f}x baseline (target <= 1.2x)")


def cost(calls: Counter) -> None:
    n = calls["_n"]
    per = 1000 / n
    dynamo_reads = sum(v for (s, a), v in ((k, v) for k, v in calls.items() if isinstance(k, tuple))
                       if s == "dynamodb" and a in ("Query", "GetItem"))
    s3_put = sum(v for k, v in calls.items() if isinstance(k, tuple) and k[0] == "s3" and k[1] in
                 ("PutObject", "ListObjectsV2", "ListObjects", "PostObject"))
    s3_get = sum(v for k, v in calls.items() if isinstance(k, tuple) and k[0] == "s3" and k[1] in
                 ("GetObject", "HeadObject"))
    sqs = sum(v for k, v in calls.items() if isinstance(k, tuple) and k[0] == "sqs") + calls["_sqs_polling"]
    executions = calls[("stepfunctions", "StartExecution")]
    kms = sum(v for k, v in calls.items() if isinstance(k, tuple) and k[0] == "kms")
    secrets = sum(v for k, v in calls.items() if isinstance(k, tuple) and k[0] == "secretsmanager")
    items = {
        "DynamoDB writes": calls["_wru"] * PRICES["dynamodb_write_unit"],
        "DynamoDB reads": dynamo_reads * PRICES["dynamodb_read_call"],
        "S3 PUT/LIST": s3_put * PRICES["s3_put_list"],
        "S3 GET/HEAD": s3_get * PRICES["s3_get_head"],
        "SQS": sqs * PRICES["sqs_request"],
        "Step Functions": executions * 4 * PRICES["sfn_transition"],
        "KMS + Secrets Manager": kms * PRICES["kms_request"] + secrets * PRICES["secrets_request"],
    }
    for name, usd in items.items():
        row("cost per 1,000 orders", name, f"${usd * per:.4f}")
    row("cost per 1,000 orders", "total (control plane)", f"${sum(items.values()) * per:.4f}",
        "excludes Lambda/CodeBuild compute of the orders themselves")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10,100,1000", help="order counts for the API-call section")
    ap.add_argument("--scale", default="100,1000,5000", help="order counts for the scaling section ('' to skip)")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print("| section | metric | value | note |\n|---|---|---|---|")
    startup()
    if not args.skip_overhead:
        overhead()
        transitions(row)
    if args.scale:
        scaling([int(s) for s in args.scale.split(",")])
    calls = api_calls([int(s) for s in args.sizes.split(",")])
    intake_latency()
    import_times()
    cost(calls)
    masking(row)
    sandbox_sweep()
    pull_requests(row)
    pipelines(row)
    operations(row)
    return 0


def sandbox_sweep() -> None:
    """What cleaning a warm sandbox costs each order (the worker's reaper, ``worker.sandbox``)."""
    from lambda_runtime.worker.sandbox import sweep_cost_seconds

    processes = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
    row("sandbox", "sweep per order (ms)", f"{sweep_cost_seconds() * 1000:.2f}", f"{processes} processes in the table")


if __name__ == "__main__":
    raise SystemExit(main())
