"""What answer variants add to a cached answer, through the gateway, side by side with a baseline.

Both suites run at once, each from its own checkout (this one, and ``--baseline-checkout``, a
commit before variants), each with its own Redis database, collection and key. Each asks the
same question once (uncached), then ``--requests`` times per round for ``--rounds`` rounds,
the two taking turns going first: every one of those is a cached answer, which on this commit
also picks a variant, gets an answer id, and queues an answer record for Redis.

Usage: python -m bench.variant_overhead --baseline-checkout /tmp/quarry-base [--rounds 10] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path

import httpx

from bench.answer_latency import Series, suite_from

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How does the gateway rate limit clients?"
# Quoted answers: what is timed is the cached path, and the first answer cannot degrade (an
# answer that degraded is not cached).
_BODY = {"question": QUESTION, "answer_mode": "extractive"}


def _round(client: httpx.Client, collection: str, requests: int) -> tuple[list[float], int]:
    """Times of ``requests`` asks of the question; and how many were not cached answers."""
    body = {**_BODY, "collection": collection}
    times = []
    misses = 0
    for _ in range(requests):
        started = time.perf_counter()
        response = client.post("/v1/query", json=body)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        misses += not response.json()["cached"]
    return times, misses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-checkout", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    collection = f"bench_{uuid.uuid4().hex[:8]}"
    with (
        suite_from(ROOT, "redis://127.0.0.1:6379/9", collection) as ours,
        suite_from(args.baseline_checkout, "redis://127.0.0.1:6379/10", collection) as theirs,
    ):
        clients = {
            name: httpx.Client(
                base_url=t["url"], headers={"authorization": f"Bearer {t['key']}"}, timeout=120
            )
            for name, t in (("variants", ours), ("baseline", theirs))
        }
        series = {name: Series() for name in clients}
        misses = dict.fromkeys(clients, 0)
        ratios = []
        try:
            for client in clients.values():  # the uncached first answer, then warm-up
                client.post(
                    "/v1/query", json={"question": QUESTION, "collection": collection}
                ).raise_for_status()
                _round(client, collection, 50)
            for i in range(args.rounds):
                order = list(clients) if i % 2 == 0 else list(reversed(clients))
                medians = {}
                for name in order:
                    times, missed = _round(clients[name], collection, args.requests)
                    misses[name] += missed
                    series[name].values.extend(times)
                    medians[name] = statistics.median(times)
                ratios.append(medians["variants"] / medians["baseline"])
        finally:
            for client in clients.values():
                client.close()
    total = args.rounds * args.requests
    print(f"cached answers through the gateway, one client, {total} per suite ({args.rounds} rounds)")
    print(f"{'suite':<34}{'p50 ms':>10}{'p99 ms':>10}{'uncached':>10}")
    for name, label in (
        ("baseline", "baseline (no variants)"),
        ("variants", "this commit (variant + record)"),
    ):
        print(f"{label:<34}{series[name].p(50):>10.2f}{series[name].p(99):>10.2f}{misses[name]:>10}")
    spread = f"min {min(ratios):.3f}, max {max(ratios):.3f}"
    print(f"p50 ratio per round, median: {statistics.median(ratios):.3f} ({spread})")


if __name__ == "__main__":
    main()
