"""Cost of the gateway: cached /v1/query through the gateway vs. rag alone, side by side in one run.

    .venv/bin/python -m bench.gateway --seconds 8 --rounds 2

Starts Milvus Lite, the embedder, the llm, rag and the gateway as real processes on free
ports, ingests examples/docs, creates a key with a limit no run reaches, and warms rag's
answer cache. Then ``concurrency`` HTTP/2 clients (one connection each) send a warmed
question to rag and to the gateway in alternating rounds. Every request through the
gateway pays key lookup, the Redis rate-limit window, the quota check and one more hop.

``--baseline REV`` (repeatable) also runs the gateway of another commit (from a temporary
git worktree) in front of the same rag, so the rounds compare rag alone, those gateways and
this one side by side; every row shows the CPU each process spent per request, from /proc.

The clients are h2load's (``--client h2load``, the default when it is installed): a
Python client spends more CPU per request than the services it measures, and on a
2-core machine that CPU is taken from them. ``--client python`` drives httpx clients instead.

``--pin-rag CPUS`` (taskset's list form, e.g. ``0``) confines rag to those CPUs and the
gateways and h2load to the others, in every round, rag alone included. Unpinned, all of
them share the machine's cores, so on a small machine the ratio measures how the gateway's
CPU is taken from rag's; pinned, rag has the same cores whether or not a gateway stands in
front of it, as when the gateway runs on its own replicas, and the ratio measures whether
the gateway keeps up with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from bench import h2load
from bench.baseline import module_argv, revision_tree
from bench.proc_cpu import parse_cpus, pin_tree, tree_cpu_s
from bench.rounds import in_turn
from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Child, Ports, Suite, free_port
from services.common.http_client import create_http2_client
from services.gateway.keys import KeyStore

COLLECTION = "bench_gateway"
QUESTIONS = (
    "What does the gateway do?",
    "How does Quarry keep its answer cache from serving stale answers?",
    "What HTTP status does a client over its rate limit receive?",
    "How are documents chunked?",
)


async def _drive(url: str, key: str | None, seconds: float, concurrency: int) -> list[float]:
    headers = {"authorization": f"Bearer {key}"} if key else None
    clients = [create_http2_client(url, timeout_s=60, headers=headers) for _ in range(concurrency)]
    latencies: list[float] = []
    try:
        await asyncio.gather(*(c.post("/v1/query", json=_body(0)) for c in clients))  # open connections
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            i = n
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await clients[n].post("/v1/query", json=_body(i))
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)
                i += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return latencies


def _drive_h2load(
    url: str, key: str | None, seconds: float, concurrency: int, cpus: set[int] | None
) -> list[float]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    run = h2load.run(
        f"{url}/v1/query",
        body=json.dumps(_body(0)).encode(),
        headers=headers,
        connections=concurrency,
        seconds=seconds,
        cpus=cpus,
    )
    if run.failed:
        raise RuntimeError(f"{run.failed} requests to {url} failed")
    return run.latencies_s


def _body(i: int) -> dict[str, object]:
    # Short answers: warming generates each once on a CPU model; later calls hit the cache.
    return {"question": QUESTIONS[i % len(QUESTIONS)], "collection": COLLECTION, "top_k": 3, "max_tokens": 16}


async def _prepare(suite: Suite, redis_url: str) -> tuple[str, str]:
    settings = IngestSettings(
        milvus_uri=suite.milvus_uri, redis_url=redis_url, embedder_url=suite.url("embedder")
    )
    await ingest_path(Path("examples/docs"), COLLECTION, settings)
    client = aioredis.Redis.from_url(redis_url)
    try:
        secret, key = await KeyStore(client).create("bench", {"query"}, None, "9999999/minute")
    finally:
        await client.aclose()
    async with create_http2_client(suite.url("rag"), timeout_s=300) as rag:
        for i in range(len(QUESTIONS)):  # warm: every later answer comes from the cache
            first = (await rag.post("/v1/query", json=_body(i))).json()
            again = (await rag.post("/v1/query", json=_body(i))).json()
            assert again["cached"] is True, f"not cached (degraded: {first.get('degraded')})"
    return secret, key.key_id


async def _forget_key(redis_url: str, key_id: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(f"quarry:apikey:{key_id}")
        await client.srem("quarry:apikeys", key_id)
    finally:
        await client.aclose()


@contextlib.contextmanager
def _baseline_gateway(suite: Suite, revision: str, tmp: Path) -> Iterator[tuple[str, Child]]:
    """The gateway of ``revision`` on a free port, in front of the suite's rag."""
    with revision_tree(revision, tmp) as tree:
        port = free_port()
        env = {**suite.children["gateway"].env, "QUARRY_GATEWAY_PORT": str(port)}
        # The worktree's package first on the path; Granian's forked worker inherits it.
        argv = module_argv(tree, "services.gateway")
        url = f"http://127.0.0.1:{port}"
        child = Child(
            f"gateway-{revision}", argv, env, f"{url}/health/ready", tmp / f"baseline-{revision}.log"
        )
        child.start()
        try:
            child.wait_ready(time.monotonic() + 120)
            yield url, child
        finally:
            child.stop()


@dataclass
class _Target:
    url: str
    key: str | None
    gateway: Child | None  # None: rag alone
    latencies: list[float] = field(default_factory=list)
    rag_cpu_s: float = 0.0
    gateway_cpu_s: float = 0.0
    cache_hits: float = 0.0
    cache_lookups: float = 0.0


def _cache_lookups(rag_url: str) -> tuple[float, float]:
    """rag's answer-cache lookups so far: (hits, all), from its /metrics.

    The bench is about cached answers; one that missed (a cache error under load opens the
    cache's breaker, and then answers are generated) measures the llm instead, so every row
    says what share of its lookups hit.
    """
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{rag_url}/metrics").text):
        if family.name == "quarry_rag_cache_lookups":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["result"]] = sample.value
    return counts.get("hit", 0.0), sum(counts.values())


def _pid(child: Child) -> int:
    assert child.process is not None
    return child.process.pid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--client", choices=("h2load", "python"), default=None)
    parser.add_argument(
        "--baseline", metavar="REV", action="append", default=[], help="also run this commit's gateway"
    )
    parser.add_argument(
        "--pin-rag", metavar="CPUS", help="rag on these CPUs, the gateways and h2load on the rest"
    )
    args = parser.parse_args()
    client = args.client or ("h2load" if h2load.available() else "python")
    rag_cpus = parse_cpus(args.pin_rag) if args.pin_rag else None
    client_cpus = os.sched_getaffinity(0) - rag_cpus if rag_cpus else None
    if rag_cpus is not None and (not client_cpus or client == "python"):
        parser.error("--pin-rag needs h2load and leaves the gateways and h2load at least one other CPU")

    def drive(url: str, key: str | None) -> list[float]:
        if client == "h2load":
            return _drive_h2load(url, key, args.seconds, args.concurrency, client_cpus)
        return asyncio.run(_drive(url, key, args.seconds, args.concurrency))

    with tempfile.TemporaryDirectory() as tmp:
        # A busy 2-core box may need long for the warm-up generations; degraded answers aren't cached.
        env = {"QUARRY_RAG_LLM_TIMEOUT_S": "300"}
        suite = Suite(data_dir=Path(tmp), redis_url=args.redis_url, ports=Ports.free(), extra_env=env)
        suite.define()
        for name in ("ingest", "ingest-worker"):  # indexing runs in-process here
            del suite.children[name]
        try:
            deadline = time.monotonic() + 300
            for stage in (("milvus", "embedder", "llm"), ("rag",), ("gateway",)):
                for name in stage:
                    suite.children[name].start()
                for name in stage:
                    suite.wait_ready(name, deadline)
            key, key_id = asyncio.run(_prepare(suite, args.redis_url))
            with contextlib.ExitStack() as stack:
                targets = {"rag alone": _Target(suite.url("rag"), None, None)}
                for revision in args.baseline:
                    url, baseline = stack.enter_context(_baseline_gateway(suite, revision, Path(tmp)))
                    targets[f"gateway {revision} → rag"] = _Target(url, key, baseline)
                targets["gateway → rag"] = _Target(suite.url("gateway"), key, suite.children["gateway"])
                rag = _pid(suite.children["rag"])
                try:
                    for round_ in range(args.rounds):
                        for target in in_turn(targets.values(), round_):
                            gateway = _pid(target.gateway) if target.gateway else None
                            if rag_cpus is not None and client_cpus is not None:
                                # Again each round: Granian may have started threads since.
                                pin_tree(rag, rag_cpus)
                                for other in targets.values():
                                    if other.gateway:
                                        pin_tree(_pid(other.gateway), client_cpus)
                            hits_before, lookups_before = _cache_lookups(suite.url("rag"))
                            rag_before = tree_cpu_s(rag)
                            gateway_before = tree_cpu_s(gateway) if gateway else 0.0
                            target.latencies += drive(target.url, target.key)
                            target.rag_cpu_s += tree_cpu_s(rag) - rag_before
                            hits, lookups = _cache_lookups(suite.url("rag"))
                            target.cache_hits += hits - hits_before
                            target.cache_lookups += lookups - lookups_before
                            if gateway:
                                target.gateway_cpu_s += tree_cpu_s(gateway) - gateway_before
                finally:
                    asyncio.run(_forget_key(args.redis_url, key_id))
        finally:
            suite.stop()

    duration = args.seconds * args.rounds
    placement = f", rag on CPUs {args.pin_rag}, the rest on the others" if args.pin_rag else ""
    table = Table(
        title=f"cached /v1/query, {args.concurrency} HTTP/2 clients ({client}), "
        f"{args.rounds}×{args.seconds:g} s each{placement}"
    )
    columns = (
        "target",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "from cache",
        "rag CPU ms/req",
        "gateway CPU ms/req",
    )
    for column in columns:
        table.add_column(column, justify="right")
    stats = {}
    for name, target in targets.items():
        latencies = sorted(target.latencies)
        n = len(latencies)
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(n * 0.99) - 1] * 1000
        stats[name] = (n / duration, p50, p99)
        gateway_cpu = f"{target.gateway_cpu_s * 1000 / n:.2f}" if target.gateway else ""
        rag_cpu = f"{target.rag_cpu_s * 1000 / n:.2f}"
        cached = f"{100 * target.cache_hits / target.cache_lookups:.2f}%" if target.cache_lookups else ""
        row = (name, str(n), f"{n / duration:,.0f}", f"{p50:.2f}", f"{p99:.2f}", cached, rag_cpu, gateway_cpu)
        table.add_row(*row)
    rag_alone = stats["rag alone"]
    for name, (rps, p50, p99) in stats.items():
        if name != "rag alone":
            label = name.replace(" → rag", "") + " / rag"
            added = (f"{p50 - rag_alone[1]:+.2f}", f"{p99 - rag_alone[2]:+.2f}")
            table.add_row(label, "", f"{rps / rag_alone[0]:.2f}×", *added, "", "", "")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
