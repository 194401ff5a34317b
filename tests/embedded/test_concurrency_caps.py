"""The caps on running orders, per run and per deployment: further orders stay ``queued`` (never
throttled into a timeout) and start as slots free, across runs."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from iac_ci.embedded.stack import EmbeddedStack

pytestmark = pytest.mark.slow


def spans(log: Path) -> list[tuple[float, float]]:
    starts: dict[str, float] = {}
    out = []
    for line in log.read_text().splitlines():
        kind, name, at = line.split()
        if kind == "start":
            starts[name] = float(at)
        else:
            out.append((starts[name], float(at)))
    return out


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, d in points:
        now += d
        peak = max(peak, now)
    return peak


def wide_job(name: str, width: int, log: Path) -> dict:
    stamp = 'python3 -c "import time; print(time.time())"'
    return {"name": name, "username": "tester", "orders": [
        {"name": f"o{i}", "target": "lambda",
         "cmds": [f'echo "start {name}-{i} $({stamp})" >> {log}', "sleep 1.5",
                  f'echo "end {name}-{i} $({stamp})" >> {log}']}
        for i in range(width)]}


@pytest.mark.parametrize(("overrides", "runs", "width", "cap"), [
    ({"max_running_per_run": 2}, 1, 5, 2),
    ({"max_running_per_deployment": 3}, 3, 3, 3),
])
def test_orders_beyond_the_cap_wait_queued_and_all_finish(aws, tmp_path: Path, overrides: dict, runs: int,
                                                          width: int, cap: int) -> None:
    log = tmp_path / "spans.log"
    log.touch()
    stack = EmbeddedStack(aws, prefix="k" + secrets.token_hex(4),
                          settings_overrides={"watchdog_grace_seconds": 5, **overrides})
    with stack:
        ids = []
        for r in range(runs):
            code, body = stack.submit(wide_job(f"wide{r}", width, log))
            assert code == 202, body
            ids.append(body["run_id"])
        dones = [stack.wait(run_id, timeout=120) for run_id in ids]
    assert not stack.pump_errors
    assert all(d["status"] == "succeeded" for d in dones), [d["status"] for d in dones]
    intervals = spans(log)
    assert len(intervals) == runs * width
    assert most_at_once(intervals) <= cap, intervals
    assert most_at_once(intervals) == cap  # the cap is used, not just respected
    if "max_running_per_deployment" in overrides:
        slots = stack.clients.dynamodb.get_item(TableName=stack.settings.locks_table,
                                                Key={"run_id": {"S": "#deployment-slots"}}, ConsistentRead=True)
        assert slots["Item"]["running"]["N"] == "0"  # every slot given back, none leaked
