"""`iac-ci run` as a user runs it: wall time and peak memory of the whole process tree.

The tree is the command, its embedded AWS process and every worker it starts; its memory is
the sum of their resident sets, sampled every 0.2 s (a child's own peak between two samples
is missed, so this is a lower bound on the true peak, and the figure to compare runs by).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

IAC_CI = str(Path(sys.executable).with_name("iac-ci"))
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Measured:
    wall_s: float
    peak_rss_bytes: int
    exit_code: int


def chains(count: int, length: int = 10) -> list[dict]:
    """``count`` independent chains of ``length`` no-op orders each."""
    return [{"name": f"c{c}-{i}", "target": "lambda", "cmds": ["true"],
             "depends_on": [f"c{c}-{i - 1}"] if i else []} for c in range(count) for i in range(length)]


def tree_rss(root: int) -> int:
    """The resident memory of ``root`` and all its descendants, in bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_job(orders: list[dict], *, name: str = "bench", timeout: float = 3600) -> Measured:
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump({"name": name, "orders": orders}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
        began = time.perf_counter()
        proc = subprocess.Popen([IAC_CI, "run", str(job), "--quiet"], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.2):
                peak = max(peak, tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = proc.wait(timeout)
        finally:
            stop.set()
            sampler.join()
        return Measured(time.perf_counter() - began, peak, code)


def one_order(repeat: int = 3) -> list[Measured]:
    return [run_job([{"name": "a", "target": "lambda", "cmds": ["true"]}], name="one") for _ in range(repeat)]


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [100]:
        m = run_job(chains(n // 10), name=f"chains{n}")
        print(f"{n} orders: {m.wall_s:.1f} s, peak {m.peak_rss_bytes / 2**20:.0f} MiB, exit {m.exit_code}")
