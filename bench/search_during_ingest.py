"""Hybrid ``/v1/search`` at one client, idle and while an ingest runs, side by side with a baseline.

    .venv/bin/python -m bench.search_during_ingest --baseline 5b5c4c0 --rounds 2

Starts one Milvus Lite and, per target, an embedder, a rag, an ingest API and an ingest worker
(its own job queue) as real processes on free ports. This checkout's target runs every service
from here; ``--baseline REV`` runs that commit's embedder (from a temporary worktree) behind
this checkout's rag and ingest, so the rows differ by the embedder alone. Setup ingests the
first ``--search-docs`` SciFact abstracts through the ingest API into the collection searched.

Each round, each target in turn (``bench.rounds``): one client sends distinct SciFact queries
to its rag's ``/v1/search`` (hybrid, top_k 10, never cached) for ``--idle-s`` seconds; then the
next ``--ingest-docs`` abstracts are posted to its ingest API, into a fresh collection, and the
client keeps searching until that job completes. Searches go to rag directly: the gateway in
front adds the same few milliseconds to both windows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.baseline import module_argv, revision_tree
from bench.rig import submit, wait_for_job
from bench.rounds import in_turn
from services.cli.suite import Ports, Suite, free_port

SEARCHED = "bench_search_idle"
STACK = ("embedder", "rag", "ingest", "ingest-worker")
STAGES = ("embed", "retrieve")


@dataclass
class _Target:
    label: str
    suite: Suite
    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    # Searches answered with an error, by window and status: left out of the latencies.
    failed: dict[tuple[str, int], int] = field(default_factory=dict)
    # rag's own timings_ms of each answered search, by window: where the time went.
    stages: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    ingest_s: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)


def _corpus(path: Path, n: int) -> list[dict[str, Any]]:
    with path.open() as f:
        return [
            {"_id": r["_id"], "title": r["title"], "text": r["text"]}
            for r in (json.loads(line) for _, line in zip(range(n), f, strict=False))
        ]


def _queries(path: Path) -> list[str]:
    with path.open() as f:
        return [json.loads(line)["text"] for line in f]


def _stack(folder: Path, milvus_port: int, redis_url: str, tree: Path | None) -> Suite:
    ports = Ports.free()
    ports.milvus = milvus_port
    suite = Suite(data_dir=folder, redis_url=redis_url, ports=ports)
    suite.define()
    for name in ("milvus", "llm", "gateway"):
        del suite.children[name]
    if tree is not None:
        suite.children["embedder"].argv = module_argv(tree, "services.embedder")
    # Latency is measured, not load shedding: no retries hide a slow search.
    suite.children["rag"].env.update({"QUARRY_RAG_RETRIES": "0", "QUARRY_RAG_RETRIEVE_TIMEOUT_S": "60"})
    return suite


def _search(client: httpx.Client, target: _Target, window: str, query: str) -> None:
    body = {"query": query, "collection": SEARCHED, "mode": "hybrid", "top_k": 10}
    start = time.perf_counter()
    response = client.post(f"{target.suite.url('rag')}/v1/search", json=body)
    if response.is_success:
        (target.idle if window == "idle" else target.busy).append(time.perf_counter() - start)
        target.stages.setdefault(window, []).append(response.json()["timings_ms"])
    else:
        key = (window, response.status_code)
        target.failed[key] = target.failed.get(key, 0) + 1


def _ingest_while_searching(
    client: httpx.Client, target: _Target, docs: list[dict[str, Any]], queries: list[str], at: int
) -> int:
    ingest = target.suite.url("ingest")
    collection = f"bench_load_{uuid.uuid4().hex[:8]}"
    client.post(f"{ingest}/v1/collections", json={"name": collection}).raise_for_status()
    job_id = submit(client, ingest, collection, docs)
    started = time.perf_counter()
    state = "queued"
    while state not in ("completed", "failed"):
        _search(client, target, "during ingest", queries[at % len(queries)])
        at += 1
        job = client.get(f"{ingest}/v1/jobs/{job_id}").raise_for_status().json()
        state = job["state"]
    target.ingest_s.append(time.perf_counter() - started)
    if state != "completed" or job["errors"]:
        raise RuntimeError(f"load job failed: {job}")
    target.chunks.append(int(job["counts"]["chunks"]))
    client.delete(f"{ingest}/v1/collections/{collection}").raise_for_status()
    return at


def _p99_ms(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/eval/scifact"))
    parser.add_argument("--baseline", metavar="REV", help="also run this commit's embedder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--search-docs", type=int, default=1000)
    parser.add_argument("--ingest-docs", type=int, default=400)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep data and logs here.")
    args = parser.parse_args()

    docs = _corpus(args.data / "corpus.jsonl", args.search_docs + args.ingest_docs)
    searched, load = docs[: args.search_docs], docs[args.search_docs :]
    queries = _queries(args.data / "queries.jsonl")
    with contextlib.ExitStack() as stack, httpx.Client(http1=False, http2=True, timeout=120) as client:
        tmp = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quarry-bench-")))
        tmp.mkdir(parents=True, exist_ok=True)
        milvus = Suite(data_dir=tmp / "milvus", redis_url=args.redis_url, ports=Ports.free())
        milvus.ports.milvus = free_port()
        milvus.define()
        milvus.children = {"milvus": milvus.children["milvus"]}
        stack.callback(milvus.stop)
        milvus.children["milvus"].start()
        milvus.wait_ready("milvus", time.monotonic() + 120)

        targets = [_Target("this checkout", _stack(tmp / "this", milvus.ports.milvus, args.redis_url, None))]
        if args.baseline:
            tree = stack.enter_context(revision_tree(args.baseline, tmp))
            suite = _stack(tmp / "baseline", milvus.ports.milvus, args.redis_url, tree)
            targets.append(_Target(f"embedder at {args.baseline}", suite))
        deadline = time.monotonic() + 300
        for target in targets:
            stack.callback(target.suite.stop)
            for name in STACK:
                target.suite.children[name].start()
        for target in targets:
            for name in STACK:
                target.suite.wait_ready(name, deadline)

        ingest = targets[0].suite.url("ingest")
        client.post(f"{ingest}/v1/collections", json={"name": SEARCHED}).raise_for_status()
        job = wait_for_job(client, ingest, submit(client, ingest, SEARCHED, searched), timeout_s=3600)
        if job["state"] != "completed" or job["errors"]:
            raise RuntimeError(f"setup ingest failed: {job}")
        print(f"searched collection: {job['counts']['chunks']} chunks of {len(searched)} abstracts")

        at = 0
        for round_ in range(args.rounds):
            for target in in_turn(targets, round_):
                for query in queries[:5]:  # warm: connections, caches, the model's first passes
                    client.post(
                        f"{target.suite.url('rag')}/v1/search", json={"query": query, "collection": SEARCHED}
                    )
                until = time.perf_counter() + args.idle_s
                while time.perf_counter() < until:
                    _search(client, target, "idle", queries[at % len(queries)])
                    at += 1
                at = _ingest_while_searching(client, target, load, queries, at)
                print(f"round {round_ + 1}, {target.label}: ingest {target.ingest_s[-1]:.1f} s")

    table = Table(
        title=f"hybrid /v1/search at one client over {len(searched):,} SciFact abstracts, idle and while "
        f"{len(load):,} more are ingested; {args.rounds} rounds"
    )
    columns = (
        "embedder",
        "window",
        "answered",
        "errors",
        "p50 ms",
        "p99 ms",
        *(f"{stage} p50 ms" for stage in STAGES),
        "busy / idle p50",
        "ingest chunks/s",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for target in targets:
        rate = sum(target.chunks) / sum(target.ingest_s)
        ratio = statistics.median(target.busy) / statistics.median(target.idle)
        for window, values in (("idle", target.idle), ("during ingest", target.busy)):
            table.add_row(
                target.label,
                window,
                str(len(values)),
                ", ".join(f"{n}x {code}" for (w, code), n in sorted(target.failed.items()) if w == window),
                f"{statistics.median(values) * 1000:.1f}",
                f"{_p99_ms(values):.1f}",
                *(
                    f"{statistics.median(t.get(stage, 0.0) for t in target.stages[window]):.1f}"
                    for stage in STAGES
                ),
                f"{ratio:.2f}x" if window != "idle" else "",
                f"{rate:.1f}" if window != "idle" else "",
            )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
