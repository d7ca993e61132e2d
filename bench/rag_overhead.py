"""Time spent inside rag itself, and a cached answer through the gateway.

    .venv/bin/python -m bench.rag_overhead --questions 60 --cached 300

Starts the whole suite on free ports (own data folder, Redis DB 15), ingests
examples/docs, then:

1. asks ``--questions`` distinct questions of rag directly, one at a time, and reads each
   answer's ``timings_ms``: rag's own time is ``total - embed - retrieve - generate``
   (cache lookups, prompt building, verification, safety, bookkeeping);
2. asks one question ``--cached`` times through the gateway (API key, rate limit, proxy),
   after a first uncached ask, and times each round trip at the client over HTTP/2: the
   Python client, then h2load (when installed) for the same requests without its overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from bench import h2load
from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Ports, Suite
from services.common.http_client import create_http2_client
from services.gateway.keys import KeyStore

REDIS_URL = "redis://127.0.0.1:6379/15"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "docs"
TOPICS = [
    "rate limits in the gateway",
    "API keys",
    "the answer cache",
    "streaming answers",
    "ingesting markdown",
    "the embedder batch size",
    "the LLM service",
    "Milvus collections",
    "health checks",
    "request ids",
    "metrics",
    "degraded answers",
]
FORMS = [
    "What should I know about {}?",
    "How does Quarry handle {}?",
    "Explain {} briefly.",
    "Where is {} configured?",
    "Why does Quarry use {}?",
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _uncached(url: str, collection: str, n: int, max_tokens: int) -> dict[str, list[float]]:
    stages: dict[str, list[float]] = {
        "cache": [],
        "embed": [],
        "retrieve": [],
        "generate": [],
        "total": [],
        "rag": [],
    }
    questions = [f.format(t) for f in FORMS for t in TOPICS]
    async with create_http2_client(url, timeout_s=600) as client:
        await client.post(
            "/v1/query", json={"question": "warm up", "collection": collection, "max_tokens": 4}
        )
        for i in range(n):
            question = f"{questions[i % len(questions)]} ({uuid.uuid4().hex[:6]})"  # never cached
            body = {"question": question, "collection": collection, "max_tokens": max_tokens}
            response = await client.post("/v1/query", json=body)
            response.raise_for_status()
            timings = response.json()["timings_ms"]
            for stage in ("cache", "embed", "retrieve", "generate", "total"):
                stages[stage].append(timings[stage])
            outside = timings["embed"] + timings["retrieve"] + timings["generate"]
            stages["rag"].append(timings["total"] - outside)
    return stages


async def _cached_via_gateway(
    suite: Suite, collection: str, n: int
) -> tuple[list[float], list[float], list[float]]:
    redis = aioredis.Redis.from_url(REDIS_URL)
    secret, _ = await KeyStore(redis).create("bench", {"query"}, None, "1000000/minute")
    await redis.aclose()
    body = {
        "question": "How does the gateway rate limit requests?",
        "collection": collection,
        "max_tokens": 32,
    }
    client_ms: list[float] = []
    rag_total_ms: list[float] = []
    headers = {"authorization": f"Bearer {secret}"}
    async with create_http2_client(suite.url("gateway"), timeout_s=600, headers=headers) as client:
        (await client.post("/v1/query", json=body)).raise_for_status()  # fills the cache
        for _ in range(20):  # warm-up
            await client.post("/v1/query", json=body)
        for _ in range(n):
            start = time.perf_counter()
            response = await client.post("/v1/query", json=body)
            elapsed = (time.perf_counter() - start) * 1000
            answer = response.json()
            if response.status_code != 200 or not answer["cached"]:
                raise RuntimeError(f"expected a cached answer, got {response.status_code}: {answer}")
            client_ms.append(elapsed)
            rag_total_ms.append(answer["timings_ms"]["total"])
    # The same requests from h2load (C, one connection, one at a time): without the Python
    # client's own time per request, which is about as large as the gateway's.
    native_ms: list[float] = []
    if h2load.available():
        run = h2load.run(
            suite.url("gateway") + "/v1/query",
            body=json.dumps(body).encode(),
            headers={**headers, "content-type": "application/json"},
            connections=1,
            requests=n,
        )
        if run.failed:
            raise RuntimeError(f"{run.failed} cached requests through the gateway failed")
        native_ms = [s * 1000 for s in run.latencies_s]
    return client_ms, rag_total_ms, native_ms


async def _run(args: argparse.Namespace) -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
        suite = Suite(data_dir=Path(tmp), redis_url=REDIS_URL, ports=Ports.free())
        suite.start()
        try:
            collection = f"bench_rag_{uuid.uuid4().hex[:8]}"
            settings = IngestSettings(
                milvus_uri=suite.milvus_uri, redis_url=REDIS_URL, embedder_url=suite.url("embedder")
            )
            await ingest_path(EXAMPLES, collection, settings)
            stages = await _uncached(suite.url("rag"), collection, args.questions, args.max_tokens)
            client_ms, rag_cached_ms, native_ms = await _cached_via_gateway(suite, collection, args.cached)
        finally:
            suite.stop()

    table = Table(
        title=f"uncached /v1/query on rag, {args.questions} questions, max_tokens {args.max_tokens} (ms)"
    )
    for column in ("stage", "p50", "p99", "mean"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage, values in stages.items():
        label = "rag itself (total - embed - retrieve - generate)" if stage == "rag" else stage
        table.add_row(
            label, f"{_pct(values, 0.5):.2f}", f"{_pct(values, 0.99):.2f}", f"{statistics.mean(values):.2f}"
        )
    console.print(table)

    cached = Table(title=f"cached answer, {args.cached} requests, one at a time (ms)")
    for column in ("measured at", "p50", "p99", "mean"):
        cached.add_column(column, justify="right" if column != "measured at" else "left")
    rows = [("client, through the gateway (HTTP/2)", client_ms), ("rag timings_ms.total", rag_cached_ms)]
    if native_ms:
        rows.insert(1, ("h2load, through the gateway (HTTP/2)", native_ms))
    for label, values in rows:
        cached.add_row(
            label, f"{_pct(values, 0.5):.2f}", f"{_pct(values, 0.99):.2f}", f"{statistics.mean(values):.2f}"
        )
    console.print(cached)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=60, help="distinct uncached questions")
    parser.add_argument("--max-tokens", type=int, default=24, help="answer length for uncached questions")
    parser.add_argument("--cached", type=int, default=300, help="cached requests through the gateway")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
