"""Control-plane overhead: a 10x10 DAG of `sleep 1` through `iac-ci run` vs the same DAG with `make -j10`.

Every order of layer k depends on all ten orders of layer k-1, so the critical path is ten
sleeps (~10 s) for both. Prints both wall times and their ratio (target <= 1.5).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def dag(layers: int, width: int, target: str = "lambda") -> list[dict]:
    def pick(i: int) -> str:
        return target if target != "mixed" else ("lambda" if i % 2 else "codebuild")

    return [{"name": f"l{layer}-{i}", "target": pick(i), "cmds": ["sleep 1"],
             "depends_on": [f"l{layer - 1}-{j}" for j in range(width)] if layer else []}
            for layer in range(layers) for i in range(width)]


def makefile(orders: list[dict]) -> str:
    lines = [".PHONY: all " + " ".join(o["name"] for o in orders), "all: " + " ".join(o["name"] for o in orders)]
    for o in orders:
        lines.append(f"{o['name']}: {' '.join(o['depends_on'])}\n\tsleep 1")
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - start, proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--width", type=int, default=10)
    ap.add_argument("--target", choices=["lambda", "codebuild", "mixed"], default="lambda",
                    help="lambda: warm local execution environments; codebuild: a fresh process per order")
    args = ap.parse_args()
    orders = dag(args.layers, args.width, args.target)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump({"name": "bench", "orders": orders}))
        (Path(tmp) / "Makefile").write_text(makefile(orders))
        make_s, mk = timed(["make", "-s", f"-j{args.width}", "-C", tmp, "all"])
        if mk.returncode:
            print(mk.stderr, file=sys.stderr)
            return 1
        iac = str(Path(sys.executable).with_name("iac-ci"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        run_s, rp = timed([iac, "run", str(job), "--json", "--quiet"], env=env)
        if rp.returncode:
            print(rp.stderr[-4000:], file=sys.stderr)
            return 1
        result = json.loads(rp.stdout)
    busy = sum(o["duration_s"] or 0 for o in result["orders"].values())
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"{'case':<34}{'wall s':>10}")
    print(f"{'make -j' + str(args.width):<34}{make_s:>10.2f}")
    print(f"{'iac-ci run (' + args.target + ')':<34}{run_s:>10.2f}")
    print(f"{'ratio iac-ci / make':<34}{run_s / make_s:>10.2f}")
    print(f"orders: {len(orders)}, status: {result['status']}, summed order time: {busy:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
