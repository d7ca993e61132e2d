"""Uncached ``/v1/search`` throughput with search batching on vs off, side by side in one run.

    .venv/bin/python -m bench.query --data ../shared/eval/scifact --mode bm25 --mode hybrid

Starts Milvus Lite, the embedder and one rag process per configuration on
free ports, indexes the SciFact corpus (one chunk per abstract, cached vectors), then
drives each rag with ``concurrency`` HTTP/2 clients sending distinct SciFact queries,
alternating the configurations (``CONFIGS``) each round. ``/v1/search`` never caches, so every
request searches Milvus (and, for dense and hybrid, embeds its query first).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.proc_cpu import tree_cpu_s
from bench.rounds import in_turn
from services.cli.beir import load_split
from services.cli.embedding_cache import embed_cached
from services.cli.retrieval_eval import index_corpus
from services.cli.suite import Child, Ports, Suite
from services.common.http_client import create_http2_client

COLLECTION = "bench_scifact"
CONFIGS = {
    "batching on": {"QUARRY_RAG_SEARCH_BATCHING": "true"},
    "batching off": {"QUARRY_RAG_SEARCH_BATCHING": "false"},
}
SERVICES = ("milvus", "embedder", "rag")


def _pid(suite: Suite, name: str) -> int:
    process = suite.children[name].process
    assert process is not None
    return process.pid


async def _drive(
    url: str, queries: list[str], mode: str, seconds: float, concurrency: int
) -> tuple[list[float], float]:
    """Latencies of every request and the wall time until the last one finished."""
    latencies: list[float] = []
    clients = [create_http2_client(url, timeout_s=300) for _ in range(concurrency)]
    try:
        # Warm-up: connections open, thread pools spun up.
        await asyncio.gather(
            *(
                c.post("/v1/search", json={"query": "warm", "collection": COLLECTION, "mode": mode})
                for c in clients
            )
        )
        started = time.perf_counter()
        deadline = started + seconds

        async def worker(n: int) -> None:
            i = n
            while time.perf_counter() < deadline:
                body = {
                    "query": queries[i % len(queries)],
                    "collection": COLLECTION,
                    "mode": mode,
                    "top_k": 10,
                }
                start = time.perf_counter()
                response = await clients[n].post("/v1/search", json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)
                i += concurrency

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        # Requests still running at the deadline are waited for and counted: throughput is
        # requests over the whole time they took, even when one request outlasts the window.
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return latencies, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/eval/scifact"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--mode",
        action="append",
        choices=["dense", "bm25", "hybrid"],
        help="Repeat for several (default hybrid).",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep data and logs here.")
    args = parser.parse_args()

    split = load_split(args.data, "test")
    vectors = embed_cached([d.passage for d in split.corpus])
    queries = list(load_split(args.data, "train").queries.values()) + list(split.queries.values())

    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as scratch:
        tmp = args.work_dir or Path(scratch)  # --work-dir keeps the services' logs
        tmp.mkdir(parents=True, exist_ok=True)
        suite = Suite(data_dir=tmp, redis_url=args.redis_url, ports=Ports.free())
        suite.define()
        for name in ("llm", "gateway"):
            del suite.children[name]
        urls: dict[str, str] = {}
        for label, config in CONFIGS.items():
            port = Ports.free().rag
            env = {
                **suite.service_env(),
                "QUARRY_RAG_PORT": str(port),
                **config,
                # Throughput, not load shedding, is measured: without batching 32 clients queue
                # searches past the 5 s default and the breaker would turn them into 503s.
                "QUARRY_RAG_RETRIEVE_TIMEOUT_S": "300",
                "QUARRY_RAG_EMBED_TIMEOUT_S": "300",
                "QUARRY_RAG_RETRIES": "0",
            }
            url = f"http://127.0.0.1:{port}"
            suite.children[label] = Child(
                label,
                [*suite.children["rag"].argv],
                env,
                f"{url}/health/ready",
                tmp / f"{label.replace(' ', '_')}.log",
            )
            urls[label] = url
        del suite.children["rag"]
        try:
            deadline = time.monotonic() + 300
            for stage in (("milvus", "embedder"), tuple(CONFIGS)):
                for name in stage:
                    suite.children[name].start()
                for name in stage:
                    suite.wait_ready(name, deadline)
            index_corpus(suite.milvus_uri, COLLECTION, split, vectors)
            modes: list[str] = args.mode or ["hybrid"]
            results: dict[tuple[str, str], list[float]] = {(m, c): [] for m in modes for c in CONFIGS}
            busy: dict[tuple[str, str], float] = dict.fromkeys(results, 0.0)
            # CPU seconds per service, to show where a request's cost lies (and so what
            # batching can share: only Milvus' per-call part).
            cpu: dict[tuple[str, str], dict[str, float]] = {k: dict.fromkeys(SERVICES, 0.0) for k in results}
            for round_ in range(args.rounds):
                for mode, label in in_turn(results, round_):
                    pids = {
                        "milvus": _pid(suite, "milvus"),
                        "embedder": _pid(suite, "embedder"),
                        "rag": _pid(suite, label),
                    }
                    before = {name: tree_cpu_s(pid) for name, pid in pids.items()}
                    latencies, elapsed = asyncio.run(
                        _drive(urls[label], queries, mode, args.seconds, args.concurrency)
                    )
                    for name, pid in pids.items():
                        cpu[mode, label][name] += tree_cpu_s(pid) - before[name]
                    results[mode, label] += latencies
                    busy[mode, label] += elapsed
        finally:
            suite.stop()

    table = Table(
        title=f"/v1/search, {args.concurrency} concurrent HTTP/2 clients, "
        f"{len(split.corpus)} chunks, {args.rounds}x{args.seconds:g} s each"
    )
    columns = ["mode", "config", "requests", "req/s", "p50 ms", "p99 ms"]
    columns += [f"{name} CPU ms/req" for name in SERVICES]
    for column in columns:
        table.add_column(column, justify="right")
    rates: dict[tuple[str, str], float] = {}
    for (mode, label), latencies in results.items():
        rates[mode, label] = len(latencies) / busy[mode, label]
        ordered = sorted(latencies)
        table.add_row(
            mode,
            label,
            str(len(latencies)),
            f"{rates[mode, label]:.1f}",
            f"{statistics.median(ordered) * 1000:.1f}",
            f"{ordered[int(len(ordered) * 0.99) - 1] * 1000:.1f}",
            *(f"{cpu[mode, label][name] * 1000 / len(latencies):.2f}" for name in SERVICES),
        )
        if label == "batching off":
            ratio = rates[mode, "batching on"] / rates[mode, "batching off"]
            table.add_row(mode, "ratio on/off", "", f"{ratio:.2f}x", "", "")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
