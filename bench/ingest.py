"""SciFact end to end through the embedder service, beside the bare model, in one run.

    .venv/bin/python -m bench.ingest [--limit N]

Starts its own Milvus Lite server and embedder on free ports (Redis DB 15, a
fresh collection), then:
1. bare model: the same chunks encoded in this process by the embedder's torch backend at its
   default precision (batch 64), no HTTP, no Milvus;
2. end to end: load JSONL → chunk → embed over HTTP/2 → upsert into Milvus;
3. unchanged re-ingest: the same file again (every document skipped by hash).
Prints documents/s, chunks/s and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from bench.proc_cpu import tree_cpu_s
from ingest.chunking import chunker_for
from ingest.config import IngestSettings
from ingest.loaders import LoadLimits, load_file
from ingest.runner import ingest_path
from services.cli.suite import Ports, Suite
from services.common.corpus_generation import generation_key

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "corpus.jsonl"
REDIS_URL = "redis://127.0.0.1:6379/15"


def _bare_model(texts: list[str]) -> tuple[float, float, str]:
    """The embedder's own backend on the same model files, in this process: the ceiling.

    The service's defaults (backend, precision, threads), batches of 64, no HTTP. Wall seconds
    and CPU seconds of the encoding alone (not the model's load), and the precision used."""
    from ingest.chunking import default_tokenizer_path
    from services.embedder.torch_model import TorchEmbeddingModel

    model = TorchEmbeddingModel(default_tokenizer_path(), "cpu")
    model.encode(["warm up"] * 8)
    started, cpu = time.perf_counter(), _own_cpu_s()
    for start in range(0, len(texts), 64):
        model.encode(texts[start : start + 64])
    return time.perf_counter() - started, _own_cpu_s() - cpu, model.precision


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--limit", type=int, default=0, help="first N documents only (0: all)")
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) must still run the finally below that stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if args.limit:
            corpus = Path(tmp) / "corpus.jsonl"
            with args.corpus.open() as src:
                corpus.write_text("".join(line for _, line in zip(range(args.limit), src, strict=False)))
        settings = IngestSettings()
        docs = load_file(corpus, corpus.parent, LoadLimits(file_bytes=1 << 30)).documents
        chunker = chunker_for(settings.chunk_tokens, settings.chunk_overlap_tokens)
        texts = [c.text for d in docs for c in chunker.split(d)]
        print(
            f"{len(docs)} documents, {len(texts)} chunks ({settings.chunk_tokens} tokens, overlap "
            f"{settings.chunk_overlap_tokens})"
        )

        bare_s, bare_cpu, precision = _bare_model(texts)
        print(f"bare model ({precision}): {bare_s:.1f} s, {len(texts) / bare_s:.0f} chunks/s")
        suite = Suite(data_dir=Path(tmp), redis_url=REDIS_URL, ports=Ports.free())
        suite.define()
        collection = f"bench_{uuid.uuid4().hex[:8]}"
        try:
            deadline = time.monotonic() + 180
            for name in ("milvus", "embedder"):
                suite.children[name].start()
            for name in ("milvus", "embedder"):
                suite.wait_ready(name, deadline)
            ingest = IngestSettings(
                milvus_uri=suite.milvus_uri,
                redis_url=REDIS_URL,
                embedder_url=suite.url("embedder"),
                lexical_index=str(suite.lexical_index),  # as quarry up writes
            )
            pids = {name: suite.children[name].process.pid for name in ("embedder", "milvus")}  # type: ignore[union-attr]

            def cpu_now() -> dict[str, float]:
                return {"ingest (this process)": _own_cpu_s()} | {n: tree_cpu_s(p) for n, p in pids.items()}

            cpu_before = cpu_now()
            started = time.perf_counter()
            first = asyncio.run(ingest_path(corpus, collection, ingest))
            e2e_s = time.perf_counter() - started
            cpu = {n: seconds - cpu_before[n] for n, seconds in cpu_now().items()}
            print(f"end to end: {e2e_s:.1f} s, {len(texts) / e2e_s:.0f} chunks/s")
            started = time.perf_counter()
            again = asyncio.run(ingest_path(corpus, collection, ingest))
            again_s = time.perf_counter() - started
        finally:
            redis.Redis.from_url(REDIS_URL).delete(generation_key(collection))
            suite.stop()
    assert first.added == len(docs) and first.chunks == len(texts), first
    assert again.unchanged == len(docs), again
    rows = [
        ("bare model (in process)", bare_s, len(docs) / bare_s, len(texts) / bare_s),
        ("end to end (embedder + Milvus)", e2e_s, len(docs) / e2e_s, len(texts) / e2e_s),
        ("re-ingest unchanged", again_s, len(docs) / again_s, 0.0),
    ]
    print("\n| run | seconds | documents/s | chunks/s |\n|---|---:|---:|---:|")
    for name, seconds, dps, cps in rows:
        print(f"| {name} | {seconds:.1f} | {dps:.0f} | {cps:.0f} |")
    # Where the cores went during the end-to-end run (everything else: the rest of the machine).
    cores = os.cpu_count() or 1
    print(f"\n| process, end to end | CPU s | share of {cores * e2e_s:.0f} core-s |\n|---|---:|---:|")
    print(f"| bare model (in process), for comparison | {bare_cpu:.1f} | {bare_cpu / cores / bare_s:.0%} |")
    for name, seconds in cpu.items():
        print(f"| {name} | {seconds:.1f} | {seconds / cores / e2e_s:.0%} |")
    print(f"\nend to end / bare model (chunks/s): {bare_s / e2e_s:.2f}  (target ≥ 0.85)")
    print(f"unchanged re-ingest / first ingest (time): {again_s / e2e_s:.1%}  (target < 5%)")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    main()
