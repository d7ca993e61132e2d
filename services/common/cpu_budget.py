"""How many CPUs this process may use: its affinity set, capped by a cgroup CPU quota.

A container under a CPU limit (Kubernetes ``limits.cpu``, compose ``cpus:``) still sees every
core of its node, and a model runtime that starts one thread per core it sees is throttled
whenever its threads outrun the quota. So thread counts come from here, not ``os.cpu_count()``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def cpu_budget(cgroup_root: Path = _CGROUP) -> int:
    """At least 1: the CPUs in the affinity set, or fewer when a quota allows fewer."""
    cpus = len(os.sched_getaffinity(0))
    quota = _quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _quota(root: Path) -> float | None:
    """The quota in CPUs (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), or None when
    there is none or it cannot be read."""
    try:
        limit, _, period = (root / "cpu.max").read_text().partition(" ")
        if limit.strip() == "max":
            return None
        return int(limit) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        v1_quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        v1_period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return v1_quota / v1_period if v1_quota > 0 and v1_period > 0 else None
