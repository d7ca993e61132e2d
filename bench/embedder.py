"""Embedder throughput: the bare model vs the service with and without dynamic batching.

    .venv/bin/python -m bench.embedder --seconds 12 --rounds 3
    .venv/bin/python -m bench.embedder --formats-only --seconds 8 --rounds 3

(a) the bare model, ``encode`` on one big batch (the limit); (b) the service under
``--clients`` concurrent clients each sending one text at a time; (c) the same
service with batching off (one request, one forward pass). First the CPU formats side by
side (torch fp32, torch bf16, ONNX fp32), which pick the CPU default. All in one run, so the
ratios compare like with like on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.rounds import in_turn
from services.cli.suite import start_service
from services.common.http_client import create_http2_client
from services.embedder.config import EmbedderSettings
from services.embedder.model import auto_backend, load_model
from services.embedder.precision import cpu_has_bf16

_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "scifact" / "corpus.jsonl"


@dataclass
class _Result:
    name: str
    texts_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None


def _texts(count: int, words: int) -> list[str]:
    """SciFact abstracts cut to ``words`` words: passages like those ingest and queries send."""
    texts = []
    with _CORPUS.open() as lines:
        for line in lines:
            text = " ".join(json.loads(line)["text"].split()[:words])
            if len(text.split()) == words:
                texts.append(text)
            if len(texts) == count:
                break
    return texts


def _offline(backend: str, texts: list[str], batch: int, seconds: float, precision: str = "auto") -> float:
    model = load_model(EmbedderSettings(backend=backend, precision=precision))  # type: ignore[arg-type]
    model.encode(texts[:batch])  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        offset = done % len(texts)
        model.encode(texts[offset : offset + batch])
        done += len(texts[offset : offset + batch])
    rate = done / (time.perf_counter() - start)
    del model
    gc.collect()
    return rate


async def _load(url: str, texts: list[str], clients: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    async with create_http2_client(url, timeout_s=120) as http:

        async def client(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                response = await http.post("/v1/embeddings", json={"input": texts[i % len(texts)]})
                response.raise_for_status()
                latencies.append(time.perf_counter() - sent)
                i += clients

        # A short unmeasured run first: connections, caches and the batcher settle.
        stop = time.perf_counter() + 2
        await asyncio.gather(*(client(c) for c in range(clients)))
        latencies.clear()
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies


def _served(name: str, env: dict[str, str], texts: list[str], args: argparse.Namespace) -> _Result:
    with tempfile.TemporaryDirectory() as tmp:
        child, url = start_service("embedder", env, Path(tmp) / "embedder.log")
        try:
            rate, latencies = asyncio.run(_load(url, texts, args.clients, args.seconds))
        finally:
            child.stop(30)
    ms = np.array(latencies) * 1000
    return _Result(name, rate, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))


def _formats(texts: list[str], batch: int, args: argparse.Namespace) -> None:
    """The CPU formats side by side, alternated each round: torch fp32, torch bf16 where the CPU
    has it, ONNX Runtime fp32 where installed. Texts/s one text per pass (a query) and
    ``batch`` per pass (ingest), and each format's least cosine to torch fp32."""
    formats = {"torch fp32": ("torch", "fp32")}
    if cpu_has_bf16():
        formats["torch bf16"] = ("torch", "bf16")
    if importlib.util.find_spec("onnxruntime") is not None:
        formats["onnx fp32"] = ("onnx", "auto")
    vectors = {}
    for name, (backend, precision) in formats.items():
        model = load_model(EmbedderSettings(backend=backend, precision=precision))  # type: ignore[arg-type]
        vectors[name] = np.concatenate(
            [model.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]
        )
        del model
    reference = vectors["torch fp32"]
    print(f"\n{args.words}-word texts, texts/s; the default here: {auto_backend('cpu', 'auto')}")
    print("| round | format | batch 1 | batch " + str(batch) + " | least cosine to torch fp32 |")
    print("|---|---|---:|---:|---:|")
    totals = {name: [0.0, 0.0] for name in formats}
    for round_ in range(args.rounds):
        for name in in_turn(totals, round_):
            backend, precision = formats[name]
            one = _offline(backend, texts, 1, args.seconds / 2, precision)
            many = _offline(backend, texts, batch, args.seconds / 2, precision)
            totals[name][0] += one
            totals[name][1] += many
            cosine = float(np.sum(reference * vectors[name], axis=1).min())
            print(f"| {round_ + 1} | {name} | {one:.1f} | {many:.1f} | {cosine:.6f} |", flush=True)
    base = totals["torch fp32"]
    for name, (one, many) in totals.items():
        print(f"| all | {name} / torch fp32 | {one / base[0]:.2f}x | {many / base[1]:.2f}x | |")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per scenario")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2, help="(a), (b), (c) alternated this many times")
    parser.add_argument("--backend", default="", help="backend of (a)-(c); default: the service's")
    parser.add_argument("--formats-only", action="store_true", help="only the formats side by side")
    args = parser.parse_args()
    texts = _texts(512, args.words)
    settings = EmbedderSettings()
    backend = args.backend or settings.backend
    batch = settings.max_batch_size
    _formats(texts, batch, args)
    if args.formats_only:
        return

    env = {"QUARRY_EMBEDDER_BACKEND": backend}
    print(f"\nbackend {backend}, {args.clients} clients x 1 text, {args.seconds:.0f} s each")
    print("| round | scenario | texts/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|")
    totals = [0.0, 0.0, 0.0]
    # Rounds alternate the three scenarios, so a slow spell of a shared machine hits all of them.
    for round_ in range(1, args.rounds + 1):
        rows = [_Result(f"(a) bare model, batch {batch}", _offline(backend, texts, batch, args.seconds))]
        rows.append(_served(f"(b) service, {args.clients} clients", env, texts, args))
        rows.append(
            _served("(c) service, batching off", {**env, "QUARRY_EMBEDDER_BATCHING": "false"}, texts, args)
        )
        for i, row in enumerate(rows):
            totals[i] += row.texts_per_s
            cells = [row.name, _fmt(row.texts_per_s), _fmt(row.p50_ms), _fmt(row.p99_ms)]
            print(f"| {round_} | " + " | ".join(cells) + " |", flush=True)
    a, b, c = totals
    print(f"| all | ratio (b)/(a) | {b / a:.2f}x | | |\n| all | ratio (b)/(c) | {b / c:.2f}x | | |")


if __name__ == "__main__":
    main()
