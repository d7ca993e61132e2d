"""CPU time and CPU placement of a service's process tree, read from and set through /proc."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _parents() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) for every live process."""
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
    return stats


def _tree(root: int, stats: dict[int, tuple[int, float]]) -> list[int]:
    pids, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        pids.append(pid)
        frontier += [child for child, (parent, _) in stats.items() if parent == pid]
    return pids


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Granian forks workers)."""
    stats = _parents()
    return sum(stats.get(pid, (0, 0.0))[1] for pid in _tree(root, stats))


def pin_tree(root: int, cpus: set[int]) -> None:
    """Confines every thread of a process and its live descendants to ``cpus``.

    Threads started later inherit the mask of the thread that starts them.
    """
    for pid in _tree(root, _parents()):
        try:
            threads = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue  # gone meanwhile
        for tid in threads:
            with contextlib.suppress(OSError):  # the thread ended between the listing and now
                os.sched_setaffinity(tid, cpus)


def parse_cpus(spec: str) -> set[int]:
    """``"0"``, ``"0-3"`` or ``"0,2-3"`` (taskset's list form) as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus
