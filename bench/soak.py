"""Soak: measure capacity, then hold 70% of it for 10 minutes; no errors, flat memory.

    python -m bench.soak                       # private suite, 10 minutes (make soak)
    python -m bench.soak --minutes 2 --step-seconds 20

Capacity is the highest offered rate (steps of --users clients, doubling) that the suite
served with no error; the soak then runs at --fraction of it. RSS of every suite process
is printed at the start and the end of the soak, read from /proc.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

# bench.locustfile first (ruff keeps this order): Locust patches sockets with gevent on import.
from bench import locustfile
from bench.load import LoadResult, run_load
from bench.rig import private_suite


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (Granian workers, the Milvus server)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:  # it exited meanwhile
            continue
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        for task in tasks:
            for child in (task / "children").read_text().split():
                found += [int(child), *_children(int(child))]
    except OSError:
        pass
    return found


def measure_capacity(targets: locustfile.Targets, users: int, step_seconds: float, max_rps: float) -> float:
    """Double the offered rate until errors appear or the served rate stops growing."""
    best, rps = 0.0, 0.5
    while rps <= max_rps:
        result = run_load(targets, users=users, rps=rps, seconds=step_seconds)
        errors = result.errors_by_status or "none"
        print(f"offered {rps:.2f} req/s: served {result.ok_rps:.2f} ok/s, errors {errors}")
        if result.errors_by_status or result.ok_rps < 0.8 * rps:
            break
        best = result.ok_rps
        rps *= 2
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fraction", type=float, default=0.7)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--step-seconds", type=float, default=45.0)
    p.add_argument("--max-rps", type=float, default=64.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="quarry-soak-") as tmp, private_suite(Path(tmp)) as rig:
        s = rig.suite
        targets = locustfile.Targets(s.url("gateway"), s.url("rag"), s.url("ingest"), rig.key, rig.collection)
        capacity = measure_capacity(targets, args.users, args.step_seconds, args.max_rps)
        if capacity <= 0:
            raise SystemExit("no error-free rate found: the suite is failing or the machine is saturated")
        rate = args.fraction * capacity
        pids = {n: c.process.pid for n, c in s.children.items() if c.process is not None}
        pids["redis"] = rig.redis.process.pid if rig.redis.process else 0
        before = {n: rss_mib(pid) for n, pid in pids.items()}
        print(f"capacity {capacity:.2f} req/s; soaking at {rate:.2f} req/s for {args.minutes:g} min")
        result: LoadResult = run_load(targets, users=args.users, rps=rate, seconds=args.minutes * 60)
        after = {n: rss_mib(pid) for n, pid in pids.items()}
    result.print()
    print(f"{'process':<15}{'RSS start MiB':>15}{'RSS end MiB':>13}{'change':>9}")
    for name in pids:
        print(f"{name:<15}{before[name]:>15.0f}{after[name]:>13.0f}{after[name] - before[name]:>+9.0f}")
    if result.errors_by_status:
        raise SystemExit(f"errors during the soak: {result.errors_by_status}")


if __name__ == "__main__":
    main()
