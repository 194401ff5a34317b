"""Where a layer's transition goes: a 10x10 DAG on an ``EmbeddedStack``, read back from the store.

For each layer after the first, from the last result of the layer before (the worker's
``finished_at``) to the next layer's orders: dispatched (the orchestrator wrote ``running`` and
sent the invoke), started (the worker began its commands). The sum of the medians is the
control plane's share of each layer; ``make -j`` spends none.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from dag_overhead import dag  # noqa: E402


def layer_breakdown(orders: dict[str, Any], layers: int, width: int) -> dict[str, float]:
    """Median, over layer transitions, of each leg (seconds)."""
    to_dispatch, to_start, spread = [], [], []
    for layer in range(1, layers):
        before = [orders[f"l{layer - 1}-{i}"] for i in range(width)]
        after = [orders[f"l{layer}-{i}"] for i in range(width)]
        last_result = max(o.finished_at for o in before)
        dispatched = [o.dispatched_at for o in after]
        started = [o.started_at for o in after]
        to_dispatch.append(max(dispatched) - last_result)
        spread.append(max(dispatched) - min(dispatched))
        to_start.append(max(started) - max(dispatched))
    return {"result_to_last_dispatch": statistics.median(to_dispatch),
            "dispatch_spread": statistics.median(spread),
            "last_dispatch_to_last_start": statistics.median(to_start)}


def run(row: Any, *, layers: int = 10, width: int = 10, target: str = "lambda") -> dict[str, float]:
    from iac_ci.embedded.server import EmbeddedAws
    from iac_ci.embedded.stack import EmbeddedStack

    aws = EmbeddedAws.start()
    try:
        with EmbeddedStack(aws, prefix="tl") as stack:
            began = time.perf_counter()
            code, body = stack.submit({"name": "bench", "orders": dag(layers, width, target)})
            assert code == 202, body
            done = stack.wait(body["run_id"], timeout=600)
            wall = time.perf_counter() - began
            assert done["status"] == "succeeded", done
            snap = stack.store.load(body["run_id"])
        stack.remove_own_files()
    finally:
        aws.stop()
    legs = layer_breakdown(snap.orders, layers, width)
    first = min(o.started_at for o in snap.orders.values() if o.started_at)
    assert snap.run is not None and snap.run.created_at
    row("transitions", f"{layers}x{width} {target} DAG in process: wall (s)", f"{wall:.2f}",
        f"submit to first command {first - snap.run.created_at:.2f} s")
    for name, seconds in legs.items():
        row("transitions", f"per layer, median: {name.replace('_', ' ')} (ms)", f"{seconds * 1000:.0f}")
    return legs


if __name__ == "__main__":
    def _print(section: str, metric: str, value: str, note: str = "") -> None:
        print(f"| {section} | {metric} | {value} | {note} |")

    run(_print, target=sys.argv[1] if len(sys.argv) > 1 else "lambda")
