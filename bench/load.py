"""Headless Locust load against the full suite: requests/s, errors by status, p50/p95/p99 per route.

    python -m bench.load --start-suite --users 8 --rps 4 --seconds 60
    python -m bench.load --gateway http://127.0.0.1:8100 --rag http://127.0.0.1:8103 \\
        --ingest http://127.0.0.1:8105 --key qk_... --collection docs --rps 4 --seconds 60

Bounded in time (--seconds) and count (--max-requests); loopback targets only.
``--start-suite`` runs a private suite (bench.rig: own Redis, free ports) and stops it after.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gevent

# Locust must patch the process before anything opens a socket.
# Importing Locust (in bench.locustfile) patches sockets with gevent; nothing above opens one.
from bench import locustfile
from bench.rig import private_suite


@dataclass
class RouteStats:
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass
class LoadResult:
    seconds: float
    requests: int
    rps: float
    ok_rps: float
    errors_by_status: dict[str, int]
    routes: dict[str, RouteStats] = field(default_factory=dict)

    def print(self) -> None:
        print(
            f"{self.requests} requests in {self.seconds:.0f}s: {self.rps:.2f} req/s ({self.ok_rps:.2f} ok/s)"
        )
        print(f"errors by status: {self.errors_by_status or 'none'}")
        print(f"{'route':<20}{'reqs':>7}{'fail':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
        for name, r in sorted(self.routes.items()):
            print(f"{name:<20}{r.requests:>7}{r.failures:>6}{r.p50_ms:>9.0f}{r.p95_ms:>9.0f}{r.p99_ms:>9.0f}")


def run_load(
    targets: locustfile.Targets, *, users: int, rps: float, seconds: float, max_requests: int = 100_000
) -> LoadResult:
    """Run ``users`` clients sharing ``rps`` for ``seconds`` (or until ``max_requests``)."""
    targets.statuses.clear()
    env = locustfile.environment(targets, per_user_rps=rps / users)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=max(1.0, users / 5))
    start = time.monotonic()
    while time.monotonic() - start < seconds and env.stats.total.num_requests < max_requests:
        gevent.sleep(0.5)
    elapsed = time.monotonic() - start  # offered-load window; answers still in flight are counted below
    runner.stop()
    runner.quit()
    total = env.stats.total
    errors = {
        f"{name} {status}": n
        for (name, status), n in sorted(targets.statuses.items())
        if status >= 400 or status == 0
    }
    routes = {
        e.name: RouteStats(
            e.num_requests,
            e.num_failures,
            e.get_response_time_percentile(0.5) or 0.0,
            e.get_response_time_percentile(0.95) or 0.0,
            e.get_response_time_percentile(0.99) or 0.0,
        )
        for e in env.stats.entries.values()
    }
    ok = total.num_requests - total.num_failures
    return LoadResult(elapsed, total.num_requests, total.num_requests / elapsed, ok / elapsed, errors, routes)


@contextmanager
def targets_from(args: argparse.Namespace) -> Iterator[tuple[locustfile.Targets, dict[str, int]]]:
    """Targets and the pids of the suite's processes (for RSS), from a private suite or the flags."""
    if not args.start_suite:
        yield locustfile.Targets(args.gateway, args.rag, args.ingest, args.key, args.collection), {}
        return
    with tempfile.TemporaryDirectory(prefix="quarry-load-") as tmp, private_suite(Path(tmp)) as rig:
        s = rig.suite
        pids = {n: c.process.pid for n, c in s.children.items() if c.process is not None}
        yield (
            locustfile.Targets(s.url("gateway"), s.url("rag"), s.url("ingest"), rig.key, rig.collection),
            pids,
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start-suite", action="store_true", help="run a private suite for the test")
    p.add_argument("--gateway", default="http://127.0.0.1:8100")
    p.add_argument("--rag", default="http://127.0.0.1:8103")
    p.add_argument("--ingest", default="http://127.0.0.1:8105")
    p.add_argument("--key", default="", help="API key with query and ingest scopes")
    p.add_argument("--collection", default="docs")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--rps", type=float, default=4.0, help="target requests/s over all users")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--json", type=Path, help="also write the result here")
    return p


def main() -> None:
    args = parser().parse_args()
    with targets_from(args) as (targets, _):
        result = run_load(
            targets, users=args.users, rps=args.rps, seconds=args.seconds, max_requests=args.max_requests
        )
    result.print()
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=1))


if __name__ == "__main__":
    main()
