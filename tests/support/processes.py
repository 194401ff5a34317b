"""Looking at processes through /proc, for tests that check nothing an order started survives."""

from __future__ import annotations

import os
from pathlib import Path


def live_group_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (reaping orphans is init's job, not ours)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive
