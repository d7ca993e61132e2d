"""Uncached ``/v1/search`` over SciFact as ingest chunks it: BM25 over ``text`` (the layout of
collections made before the ``lexical`` field) against BM25 over ``lexical``, side by side.

    .venv/bin/python -m bench.query --data ../shared/eval/scifact --concurrency 1 --concurrency 32

Starts Milvus Lite, the embedder and one rag process on free ports; chunks the corpus with
ingest's chunker and settings, embeds the chunks once (cached on disk), and writes the same
rows through ingest's ``ChunkStore`` into one collection of each layout. Each round drives
rag with ``concurrency`` HTTP/2 clients sending distinct SciFact queries at each collection in
turn (``bench.rounds``). ``/v1/search`` never caches, so every request embeds its query
(dense, hybrid) and searches Milvus.

``--baseline REV`` also runs that commit's embedder and rag (from a temporary worktree) over
the text-BM25 collection in the same rounds: the whole search path as it was at ``REV``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.baseline import module_argv, revision_tree
from bench.proc_cpu import tree_cpu_s
from bench.rounds import in_turn
from ingest.chunking import chunker_for
from ingest.config import IngestSettings
from ingest.documents import Document
from ingest.store import ChunkStore
from services.cli.beir import BeirSplit, load_split
from services.cli.embedding_cache import embed_cached
from services.cli.suite import Child, Ports, Suite, free_port
from services.common import vector_schema as vs
from services.common.http_client import create_http2_client
from services.common.milvus_connect import connect_milvus

LAYOUTS = {"text BM25 (before)": "bench_text_bm25", "lexical BM25": "bench_lexical"}
SERVICES = ("milvus", "embedder", "rag")
_WRITE_BATCH = 500


def _pid(child: Child) -> int:
    assert child.process is not None
    return child.process.pid


def _baseline_stack(suite: Suite, tree: Path, folder: Path) -> tuple[str, dict[str, Child]]:
    """``tree``'s embedder and rag on free ports, rag reading the suite's Milvus: rag's URL and
    the two processes."""
    embedder_port, rag_port = free_port(), free_port()
    embedder_url, rag_url = f"http://127.0.0.1:{embedder_port}", f"http://127.0.0.1:{rag_port}"
    env = suite.children["rag"].env | {
        "QUARRY_EMBEDDER_PORT": str(embedder_port),
        "QUARRY_RAG_PORT": str(rag_port),
        "QUARRY_RAG_EMBEDDER_URL": embedder_url,
    }
    children = {
        "embedder": Child(
            "baseline-embedder",
            module_argv(tree, "services.embedder"),
            env,
            f"{embedder_url}/health/ready",
            folder / "baseline-embedder.log",
        ),
        "rag": Child(
            "baseline-rag",
            module_argv(tree, "services.rag"),
            env,
            f"{rag_url}/health/ready",
            folder / "baseline-rag.log",
        ),
    }
    for name in ("embedder", "rag"):
        children[name].start()
        children[name].wait_ready(time.monotonic() + 300)
    return rag_url, children


async def _drive(
    url: str, collection: str, queries: list[str], mode: str, seconds: float, concurrency: int
) -> tuple[list[float], float]:
    """Latencies of every request and the wall time until the last one finished."""
    latencies: list[float] = []
    clients = [create_http2_client(url, timeout_s=300) for _ in range(concurrency)]
    try:
        # Warm-up: connections open, thread pools spun up.
        await asyncio.gather(
            *(
                c.post("/v1/search", json={"query": "warm", "collection": collection, "mode": mode})
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
                    "collection": collection,
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


async def _index(uri: str, lexical_index: Path, split: BeirSplit) -> int:
    """The corpus's chunks, as ingest makes and writes them, into one collection per layout;
    the lexical one also into the suite's lexical index, as ingest writes it."""
    settings = IngestSettings()
    chunker = chunker_for(settings.chunk_tokens, settings.chunk_overlap_tokens)
    docs = [Document(d.doc_id, d.title, d.doc_id, d.text, {}) for d in split.corpus]
    chunks = [(doc, chunk) for doc in docs for chunk in chunker.split(doc)]
    vectors = embed_cached([chunk.text for _, chunk in chunks])
    rows = [
        {
            vs.CHUNK_ID: chunk.chunk_id,
            vs.DOC_ID: doc.doc_id,
            vs.DOC_HASH: doc.content_hash,
            vs.CHUNK_INDEX: chunk.index,
            vs.TEXT: chunk.text,
            vs.TITLE: doc.title[:1024],
            vs.SOURCE: doc.source,
            vs.METADATA: {},
            vs.DENSE: vector.tolist(),
        }
        for (doc, chunk), vector in zip(chunks, vectors, strict=True)
    ]
    client = connect_milvus(uri)
    client.create_collection(
        LAYOUTS["text BM25 (before)"],
        schema=vs.build_schema(int(vectors.shape[1]), lexical=False),
        index_params=vs.build_index_params(client),
    )
    client.close()
    store = ChunkStore(uri, lexical_index=str(lexical_index))
    try:
        for collection in LAYOUTS.values():
            await store.ensure_collection(collection, int(vectors.shape[1]))
            for start in range(0, len(rows), _WRITE_BATCH):
                await store.upsert(collection, rows[start : start + _WRITE_BATCH])
            await store.flush(collection)
    finally:
        store.close()
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/eval/scifact"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, action="append", help="Clients; repeat for several (default 32)."
    )
    parser.add_argument(
        "--mode",
        action="append",
        choices=["dense", "bm25", "hybrid"],
        help="Repeat for several (default hybrid).",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--baseline", metavar="REV", help="also run this commit's embedder and rag")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep data and logs here.")
    args = parser.parse_args()

    split = load_split(args.data, "test")
    queries = list(load_split(args.data, "train").queries.values()) + list(split.queries.values())
    modes: list[str] = args.mode or ["hybrid"]
    concurrencies: list[int] = args.concurrency or [32]

    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as scratch:
        tmp = args.work_dir or Path(scratch)  # --work-dir keeps the services' logs
        tmp.mkdir(parents=True, exist_ok=True)
        suite = Suite(data_dir=tmp, redis_url=args.redis_url, ports=Ports.free())
        suite.define()
        for name in ("llm", "gateway"):
            del suite.children[name]
        suite.children["rag"].env.update(
            {
                # Throughput, not load shedding, is measured: 32 clients can queue searches
                # past the 5 s default and the breaker would turn them into 503s.
                "QUARRY_RAG_RETRIEVE_TIMEOUT_S": "300",
                "QUARRY_RAG_EMBED_TIMEOUT_S": "300",
                "QUARRY_RAG_RETRIES": "0",
            }
        )
        labels = list(LAYOUTS)
        with contextlib.ExitStack() as stack:
            stack.callback(suite.stop)
            deadline = time.monotonic() + 300
            for stage in (("milvus", "embedder"), ("rag",)):
                for name in stage:
                    suite.children[name].start()
                for name in stage:
                    suite.wait_ready(name, deadline)
            # label -> (rag's URL, collection, the processes whose CPU a request costs)
            stacks = {
                label: (suite.url("rag"), collection, {n: suite.children[n] for n in SERVICES})
                for label, collection in LAYOUTS.items()
            }
            if args.baseline:
                tree = stack.enter_context(revision_tree(args.baseline, tmp))
                rag_url, baseline = _baseline_stack(suite, tree, tmp)
                for child in baseline.values():
                    stack.callback(child.stop)
                label = f"{args.baseline} on text BM25"
                processes = {"milvus": suite.children["milvus"]} | baseline
                stacks[label] = (rag_url, LAYOUTS["text BM25 (before)"], processes)
                labels.insert(0, label)
            chunks = asyncio.run(_index(suite.milvus_uri, suite.lexical_index, split))
            targets = [(m, c, label) for m in modes for c in concurrencies for label in labels]
            results: dict[tuple[str, int, str], list[float]] = {t: [] for t in targets}
            busy: dict[tuple[str, int, str], float] = dict.fromkeys(targets, 0.0)
            # CPU seconds per service, to show where a request's cost lies.
            cpu = {t: dict.fromkeys(SERVICES, 0.0) for t in targets}
            for round_ in range(args.rounds):
                for target in in_turn(targets, round_):
                    mode, concurrency, label = target
                    url, collection, children = stacks[label]
                    pids = {name: _pid(child) for name, child in children.items()}
                    before = {name: tree_cpu_s(pid) for name, pid in pids.items()}
                    latencies, elapsed = asyncio.run(
                        _drive(url, collection, queries, mode, args.seconds, concurrency)
                    )
                    for name, pid in pids.items():
                        cpu[target][name] += tree_cpu_s(pid) - before[name]
                    results[target] += latencies
                    busy[target] += elapsed

    table = Table(
        title=f"/v1/search over {chunks:,} SciFact chunks (ingest's chunking), "
        f"{args.rounds}x{args.seconds:g} s per target"
    )
    columns = ["mode", "clients", "layout", "requests", "req/s", "p50 ms", "p99 ms"]
    columns += [f"{name} CPU ms/req" for name in SERVICES]
    for column in columns:
        table.add_column(column, justify="right")
    after_label = labels[-1]
    for mode, concurrency, label in targets:
        latencies = sorted(results[mode, concurrency, label])
        rate = len(latencies) / busy[mode, concurrency, label]
        table.add_row(
            mode,
            str(concurrency),
            label,
            str(len(latencies)),
            f"{rate:.1f}",
            f"{statistics.median(latencies) * 1000:.1f}",
            f"{latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000:.1f}",
            *(f"{cpu[mode, concurrency, label][n] * 1000 / len(latencies):.2f}" for n in SERVICES),
        )
        if label != after_label:
            continue
        for before_label in labels[:-1]:
            old = sorted(results[mode, concurrency, before_label])
            speed = rate / (len(old) / busy[mode, concurrency, before_label])
            p50 = statistics.median(latencies) / statistics.median(old)
            ratio = f"lexical / {before_label}"
            table.add_row(mode, str(concurrency), ratio, "", f"{speed:.2f}x", f"{p50:.2f}x", "")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
