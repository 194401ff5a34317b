"""Operations figures: following a log, scaffolding a repository, rotating certificates, writing metrics.

1. ``iac-ci logs RUN ORDER --follow`` against a real ``iac-ci serve``: an order prints ``tick <epoch>``
   every 0.25 s for ~12 s; each line's latency is the time the follower printed it minus the epoch in
   it (the README says a running order's log reaches the follower within about three seconds), and the tail is
   the time from the order's last line to the follower's exit (the order ends, its final log is
   read and its status reported).
2. ``iac-ci init --dry-run`` on a generated git repository of 200 roots (``envs/<n>``, each with
   ``backend "s3" {}`` and 1-3 of 50 shared modules, some modules calling others): the command's
   wall time, process start included, as a user types it.
3. ``iac_ci.certs.lifecycle.Authority`` on the embedded AWS (moto in this process, over HTTP):
   ``init``, 50 client certificates, then ``rotate-intermediate`` as a dry run (the plan) and
   ``--apply`` (step 1: the plan again, a new intermediate, every certificate re-issued).
4. ``observability.metrics.record`` into ``EmfWriter.to_file``: the orchestrator records the documents
   of one state write in one call, so the cost per document is measured with one document per call (a
   write that moves one order) and with 100 (a write that dispatches a layer of 100).

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -c "import sys; sys.path.insert(0,'benchmarks'); \
        import bench_operations; bench_operations.run()"
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import yaml

Row = Callable[..., None]
T = TypeVar("T")
IAC_CI = str(Path(sys.executable).with_name("iac-ci"))
TICK = re.compile(r"^tick (\d+\.\d+)$")
SECRET_LINE = re.compile(r"job signing secret \(X-IacCi-Signature-256\): (\S+)")
README_LIVE_SECONDS = 3.0  # "A running order's log reaches `iac-ci logs --follow` within about three seconds"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


def _cli_env(tmp: Path) -> dict[str, str]:
    """A user's shell: no AWS endpoint of an earlier section (serve starts its own), and temporary
    files (serve's worker log folder) in ``tmp``, which is removed afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    env.update(
        TMPDIR=str(tmp), POWERTOOLS_LOG_LEVEL="WARNING", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    )
    return env


# ---- 1. logs --follow ------------------------------------------------------------------------------
@contextlib.contextmanager
def _serve(tmp: Path, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A real ``iac-ci serve`` on a free port: (URL, signing secret). Stopped with SIGTERM, as Ctrl-C
    stops it; its process group (its own: the embedded AWS and the workers are in it) is killed if
    anything outlives that."""
    err_path = tmp / "serve.err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [IAC_CI, "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=tmp,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        found = SECRET_LINE.search(err_path.read_text())
        if not url.startswith("http://") or found is None:
            raise RuntimeError(f"iac-ci serve did not start: {err_path.read_text()[-2000:]}")
        yield url, found.group(1)
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # only what it started and left behind
        print(f"warning: iac-ci serve (pid {proc.pid}) left processes behind; killed", file=sys.stderr)
    if proc.stdout is not None:
        proc.stdout.close()


def _submit(tmp: Path, env: dict[str, str], url: str, seconds: float, every: float) -> str:
    count = round(seconds / every)
    job = {
        "name": "ticks",
        "orders": [
            {
                "name": "ticks",
                "target": "lambda",
                "timeout": 120,
                "cmds": [f'for i in $(seq {count}); do echo "tick $(date +%s.%N)"; sleep {every}; done'],
            }
        ],
    }
    (tmp / "ticks.yaml").write_text(yaml.safe_dump(job))
    proc = subprocess.run(
        [IAC_CI, "submit", str(tmp / "ticks.yaml"), "--url", url, "--no-wait"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"iac-ci submit failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip()


@dataclasses.dataclass
class Followed:
    latencies: list[float]
    last_printed: float
    exited: float
    exit_code: int


def _follow(env: dict[str, str], url: str, run_id: str, limit: float = 120) -> Followed:
    """``iac-ci logs RUN ticks --follow``, its stdout read line by line as it prints it."""
    proc = subprocess.Popen(
        [IAC_CI, "logs", run_id, "ticks", "--follow", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(limit, proc.kill)  # a follower that never ends must not hang the benchmark
    watchdog.start()
    latencies, last = [], 0.0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen = time.time()
            tick = TICK.match(line.rstrip("\n"))
            if tick:
                last = float(tick.group(1))
                latencies.append(seen - last)
        code = proc.wait(timeout=limit)
        return Followed(latencies, last, time.time(), code)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def logs_follow(row: Row, seconds: float = 12.0, every: float = 0.25) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ops-logs-") as name:
        tmp = Path(name)
        env = _cli_env(tmp)
        with _serve(tmp, env) as (url, secret):
            env["IAC_CI_API_SECRET"] = secret
            followed = _follow(env, url, _submit(tmp, env, url, seconds, every))
    lat, expected = followed.latencies, round(seconds / every)
    if not lat:
        row("operations", "logs --follow: no tick line seen", "-", f"exit {followed.exit_code}")
        return
    p95 = _p95(lat)
    claim = "within" if p95 <= README_LIVE_SECONDS else "beyond"
    row(
        "operations",
        "logs --follow: line latency p50 / p95 / max (s)",
        f"{statistics.median(lat):.2f} / {p95:.2f} / {max(lat):.2f}",
        f"p95 {claim} the README's 'within about three seconds of being written'",
    )
    row("operations", "logs --follow: tick lines seen", f"{len(lat)}", f"of {expected} printed every {every:g} s")
    row(
        "operations",
        "logs --follow: order's last line to the follower's exit (s)",
        f"{followed.exited - followed.last_printed:.2f}",
        f"exit {followed.exit_code}",
    )


# ---- 2. init --dry-run -----------------------------------------------------------------------------
def _terraform_repo(top: Path, roots: int = 200, modules: int = 50, seed: int = 12) -> None:
    """``envs/<n>`` roots with ``backend "s3" {}``, each calling 1-3 of ``modules/m<k>``; every fifth
    module calls the next one (so a root's paths reach modules it does not name)."""
    rng = random.Random(seed)
    for k in range(modules):
        calls = f'module "m{k + 1}" {{\n  source = "../m{k + 1}"\n}}\n' if k % 5 == 0 and k + 1 < modules else ""
        _write(
            top / "modules" / f"m{k}" / "main.tf",
            f'variable "name" {{\n  type = string\n}}\n\nresource "null_resource" "r{k}" {{}}\n\n{calls}',
        )
    for n in range(roots):
        called = "".join(
            f'\nmodule "m{k}" {{\n  source = "../../modules/m{k}"\n  name   = "env{n}"\n}}\n'
            for k in sorted(rng.sample(range(modules), rng.randint(1, 3)))
        )
        _write(
            top / "envs" / f"e{n:03d}" / "main.tf",
            f'terraform {{\n  backend "s3" {{}}\n}}\n\nprovider "aws" {{\n  region = "us-east-1"\n}}\n{called}',
        )
    git = ["git", "-C", str(top), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for args in (
        ["init", "-q"],
        ["remote", "add", "origin", "https://github.com/acme/infra.git"],
        ["add", "-A"],
        ["commit", "-q", "-m", "roots"],
    ):
        subprocess.run([*git, *args], check=True, capture_output=True, timeout=60)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def init_dry_run(row: Row, roots: int = 200, modules: int = 50) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ops-init-") as name:
        tmp = Path(name)
        top = tmp / "infra"
        _terraform_repo(top, roots, modules)
        env = _cli_env(tmp)
        walls, proc = [], None
        for _ in range(3):
            start = time.perf_counter()
            proc = subprocess.run(
                [IAC_CI, "init", "--dry-run", str(top)], capture_output=True, text=True, timeout=120, env=env
            )
            walls.append(time.perf_counter() - start)
    assert proc is not None
    if proc.returncode != 0:
        raise RuntimeError(f"iac-ci init --dry-run failed: {proc.stderr[-2000:]}")
    found = re.search(r"found (\d+) Terraform root", proc.stderr)
    orders = yaml.safe_load(proc.stdout)["orders"]
    row(
        "operations",
        f"init --dry-run: {roots} roots x {modules} shared modules, best of 3 (s)",
        f"{min(walls):.2f}",
        f"all: {', '.join(f'{w:.2f}' for w in walls)}; process start included",
    )
    row(
        "operations",
        "init --dry-run: roots found / orders written",
        f"{found.group(1) if found else '?'} / {len(orders)}",
        f"{roots} roots generated",
    )
    row("operations", "init --dry-run: size of the .iac-ci.yml printed (bytes)", f"{len(proc.stdout.encode())}")


# ---- 3. certificate rotation -----------------------------------------------------------------------
@contextlib.contextmanager
def _environ() -> Iterator[None]:
    """The embedded AWS's variables for this process's SDK, put back afterwards (later sections
    start their own)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _timed(call: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def certs_rotation(row: Row, clients_count: int = 50) -> None:
    from iac_ci.certs.lifecycle import Authority
    from iac_ci.certs.store import CertResources, CertStore
    from iac_ci.embedded.server import EmbeddedAws
    from lambda_runtime.aws.clients import AwsClients

    with _environ(), tempfile.TemporaryDirectory(prefix="bench-ops-certs-") as name:
        out = Path(name)
        aws = EmbeddedAws.start(in_process=True)
        try:
            os.environ.update(aws.env())
            store = CertStore(AwsClients(region=aws.region), CertResources.embedded("bench" + secrets.token_hex(3)))
            store.ensure_embedded()
            ca = Authority(store)
            init_s, _ = _timed(ca.init)
            issue_s, _ = _timed(lambda: [ca.issue(f"client{i}", out_dir=out) for i in range(clients_count)])
            dry_s, plan = _timed(ca.plan_rotation)
            apply_s, _ = _timed(lambda: ca.apply_rotation(ca.plan_rotation(), out_dir=out))
            reissued = len(plan.reissue)
            rotated = store.state()
        finally:
            aws.stop()
    assert rotated is not None and rotated.retiring is not None and reissued == clients_count
    row("operations", "certs: init, root + intermediate (s)", f"{init_s:.2f}", "embedded AWS (moto over HTTP)")
    row(
        "operations",
        f"certs: issue {clients_count} client certificates, per certificate (ms)",
        f"{issue_s / clients_count * 1000:.0f}",
        f"{issue_s:.1f} s in all",
    )
    row(
        "operations",
        f"certs: rotate-intermediate dry run, {clients_count} active (s)",
        f"{dry_s:.2f}",
        "the plan: reads only",
    )
    row(
        "operations",
        "certs: rotate-intermediate --apply, step 1 (s)",
        f"{apply_s:.2f}",
        f"new intermediate + {reissued} re-issued, {apply_s / reissued * 1000:.0f} ms per certificate",
    )


# ---- 4. EMF ----------------------------------------------------------------------------------------
def emf(row: Row, documents: int = 10_000) -> None:
    from lambda_runtime.observability import metrics
    from lambda_runtime.observability.trace import leg_at
    from lambda_runtime.schema.records import OrderRecord
    from lambda_runtime.schema.status import OrderStatus

    now, run_id = time.time(), secrets.token_hex(8)
    order = OrderRecord(
        name="plan-envs-dev",
        status=OrderStatus.SUCCEEDED,
        target="lambda",
        attempt=1,
        dispatched_at=now - 30,
        started_at=now - 29.5,
        finished_at=now - 1,
    )
    trace = str(leg_at(run_id, now))
    # a dispatched and a finished order in turn, as the orchestrator records an order's two transitions
    observations = [
        metrics.order_dispatched(order, run_id=run_id, ready=now - 31, trace=trace),
        metrics.order_finished(order, run_id=run_id, reported_by="worker", started_reported=True, now=now, trace=trace),
    ]
    for per_call in (1, 100):
        with tempfile.TemporaryDirectory(prefix="bench-ops-emf-") as name:
            path = Path(name) / "metrics.jsonl"
            # the two kinds of document in turn, across calls as within one
            batches = [[observations[(k + i) % 2] for i in range(per_call)] for k in (0, 1)]
            with metrics.collecting(metrics.EmfWriter.to_file(path)):
                start = time.perf_counter()
                for call in range(documents // per_call):
                    metrics.record(*batches[call % 2])
                elapsed = time.perf_counter() - start
            written = path.read_bytes() if path.exists() else b""
        lines = written.count(b"\n")
        if lines != documents:  # ``record`` logs a failed write and goes on: a figure of failures is no figure
            raise RuntimeError(f"EMF: {lines} of {documents} documents written (POWERTOOLS_METRICS_DISABLED set?)")
        row(
            "operations",
            f"EMF: one document to a file, {per_call} per write, over {documents:,} (us)",
            f"{elapsed / documents * 1e6:.0f}",
            f"{len(written) / documents:.0f} bytes per document; the file opened once per write",
        )


def run(row: Row | None = None) -> None:
    if row is None:  # run on its own: the table's own row printer (run_all imports this module first)
        from run_all import row as table_row

        row = table_row
    logs_follow(row)
    init_dry_run(row)
    certs_rotation(row)
    emf(row)
