"""CPU time of a service process read from /proc, for benches that report CPU per request."""

from __future__ import annotations

import os
from pathlib import Path


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Granian forks workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += stats.get(pid, (0, 0.0))[1]
        frontier += [child for child, (parent, _) in stats.items() if parent == pid]
    return total
