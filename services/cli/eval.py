"""``quarry eval``: retrieval quality on a BEIR data set for dense, BM25 and hybrid search, or answers.

Retrieval (``--data``) is measured through the product path: the corpus is ingested by
ingest's own pipeline and searched through rag's ``/v1/search``; see
:mod:`services.cli.retrieval_eval` for exactly what is shared with a user's path and what is
not. ``--one-chunk-per-doc`` is the ablation with one in-process embedded row per document.
Answers (``--answers``, ``--claims``) are asked through the gateway's ``/v1/query``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.cli.api_key import api_key
from services.cli.beir import load_split
from services.cli.embedding_cache import DEFAULT_CACHE_DIR
from services.cli.retrieval_eval import (
    DEPTH,
    EvalResult,
    EvalServices,
    default_redis_url,
    eval_services,
    evaluate_product,
    percentile,
)
from services.cli.unreachable import reaching
from services.rag.config import RagSettings
from services.rag.retrieval.retriever import MODES, RetrievalConfig

console = Console()


def eval_command(
    data: Annotated[
        Path | None, typer.Option(help="BEIR data set folder (corpus.jsonl, queries.jsonl, qrels/).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="qrels split to score: train (tuning) or test (reporting).")
    ] = "test",
    milvus_uri: Annotated[
        str | None,
        typer.Option(help="Milvus to index into (default: a temporary Milvus Lite server); rag searches it."),
    ] = None,
    mode: Annotated[
        list[str] | None, typer.Option(help="Modes to score (default: dense, bm25, hybrid).")
    ] = None,
    one_chunk_per_doc: Annotated[
        bool,
        typer.Option(
            help="Ablation: one in-process embedded row per document (title + abstract), no ingest."
        ),
    ] = False,
    cache_dir: Annotated[
        Path, typer.Option(help="Embedding cache folder (chunk vectors by model and text).")
    ] = DEFAULT_CACHE_DIR,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Redis for ingest's locks and generations (default: QUARRY_REDIS_URL or db 0)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Searches in flight during the quality pass.")] = 8,
    latency_queries: Annotated[
        int, typer.Option(min=0, help="Queries then timed one at a time per mode (0: no latency).")
    ] = 300,
    answers: Annotated[
        Path | None,
        typer.Option(help="A QA set (JSONL): score answers through the gateway's /v1/query instead."),
    ] = None,
    claims: Annotated[
        bool, typer.Option(help="Ask --data's claims through /v1/query: first-citation precision.")
    ] = False,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="Answer modes auto, extractive, unverified (default: all; claims: extractive), or the "
            "name of an answer variant (name or name@version), pinned (needs an admin key)."
        ),
    ] = None,
    collection: Annotated[str, typer.Option(help="Collection asked (--answers, --claims).")] = "docs",
    url: Annotated[str, typer.Option(help="Gateway URL (--answers, --claims).")] = "http://127.0.0.1:8100",
    key: Annotated[str | None, typer.Option(help="API key (default: QUARRY_API_KEY or the dev key).")] = None,
    limit: Annotated[int | None, typer.Option(help="Ask at most this many claims.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write every answer (JSONL) here, to check by hand.")
    ] = None,
) -> None:
    """Score retrieval on a BEIR data set (nDCG@10, Recall@10/100, MRR@10 per mode), or answers."""
    if answers is not None or claims:
        _answer_eval(answers, claims, data, split, variant, collection, url, key, limit, out)
        return
    if data is None:
        raise typer.BadParameter("--data is required (or --answers)")
    modes = [m for m in MODES if m in (mode or MODES)]
    if not modes:
        raise typer.BadParameter(f"modes are {', '.join(MODES)}")
    started = time.perf_counter()
    beir = load_split(data, split)
    config = RetrievalConfig.from_settings(RagSettings())

    def run(services: EvalServices, progress: Callable[[str], None]) -> EvalResult:
        return asyncio.run(
            evaluate_product(
                services,
                data,
                beir,
                modes,
                one_chunk_per_doc=one_chunk_per_doc,
                cache_dir=cache_dir,
                concurrency=concurrency,
                latency_queries=latency_queries,
                progress=progress,
            )
        )

    with (
        console.status("starting Milvus Lite, the embedder and rag...") as status,
        tempfile.TemporaryDirectory(prefix="quarry-eval-") as tmp,
        eval_services(Path(tmp), redis_url or default_redis_url(), milvus_uri) as services,
    ):
        result = run(services, status.update)
    _print_retrieval(result, data, split, len(beir.queries), time.perf_counter() - started, concurrency)
    fusion = f"RRF k={config.rrf_k:g}" if config.fusion == "rrf" else "max-normalised scores"
    console.print(
        f"hybrid: {fusion}, dense weight {config.dense_weight:g}, BM25 weight {config.bm25_weight:g}, "
        f"depth {config.hybrid_depth}"
    )


def _print_retrieval(
    result: EvalResult, data: Path, split: str, queries: int, seconds: float, concurrency: int
) -> None:
    index = result.index
    table = Table(
        title=f"{data.name} {split}: {queries} queries, {index.documents} docs, {index.chunks} chunks "
        f"({index.kind}) ({seconds:.0f} s)"
    )
    table.add_column("mode")
    metrics = list(next(iter(result.scores.values())))
    for name in [*metrics, "p50 ms", "p99 ms"]:
        table.add_column(name, justify="right")
    for name, values in result.scores.items():
        latencies = result.runs[name].latencies_ms
        table.add_row(
            name,
            *(f"{values[m]:.4f}" for m in metrics),
            *(f"{percentile(latencies, q):.1f}" if latencies else "-" for q in (50, 99)),
        )
    console.print(table)
    chunking = (
        f", chunks of {index.chunk_tokens} tokens, overlap {index.overlap_tokens}"
        if index.chunk_tokens is not None
        else ", title + abstract per row"
    )
    console.print(
        f"index: {index.kind}{chunking}; built in {index.seconds:.1f} s "
        f"({index.embedded} texts embedded, {index.cached} from the cache"
        + (f" {result.cache_path}" if result.cache_path else "")
        + f"); embedder {result.embedder_model}"
    )
    timed = len(next(iter(result.runs.values())).latencies_ms)
    console.print(
        f"search: rag /v1/search, top_k {DEPTH} chunks, documents ranked by their first chunk; "
        f"quality at {concurrency} in flight"
        + (f", latency one query at a time over {timed} queries (client-side)" if timed else "")
    )


def _answer_eval(
    answers: Path | None,
    claims: bool,
    data: Path | None,
    split: str,
    variant: list[str] | None,
    collection: str,
    url: str,
    key: str | None,
    limit: int | None,
    out: Path | None,
) -> None:
    from services.cli import answer_eval

    for name in variant or []:
        try:
            answer_eval.request_fields(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    headers = {"authorization": f"Bearer {api_key(key)}"}
    started = time.perf_counter()
    try:
        with reaching("the gateway", url), httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            if claims:
                if data is None:
                    raise typer.BadParameter("--claims needs --data")
                beir = load_split(data, split)
                name = (variant or ["extractive"])[0]
                tally = answer_eval.run_claims(
                    client, beir.queries, beir.qrels, collection, answer_eval.request_fields(name), limit
                )
                _print_rows(
                    f"{data.name} {split} claims, {name} ({time.perf_counter() - started:.0f} s)",
                    {name: tally.row()},
                )
                return
            assert answers is not None
            items = answer_eval.load_qa(answers, split)
            tallies = answer_eval.run_answers(
                client, items, collection, variant or list(answer_eval.VARIANTS)
            )
    except answer_eval.QueryRefused as exc:
        # Every later question would be refused alike (a wrong key, an unknown collection).
        print(f"quarry: the gateway at {url} refused the questions: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    title = (
        f"{answers.name} {split}: {sum(i.in_scope for i in items)} in scope, "
        f"{sum(not i.in_scope for i in items)} out of scope ({time.perf_counter() - started:.0f} s)"
    )
    _print_rows(title, {name: tally.row() for name, tally in tallies.items()})
    if out is not None:
        with out.open("w") as handle:
            for name, answered in tallies.items():
                for answer in answered.answers:
                    handle.write(json.dumps({"variant": name, **answer}) + "\n")


def _print_rows(title: str, rows: dict[str, dict[str, str]]) -> None:
    table = Table(title=title)
    table.add_column("variant")
    columns = list(next(iter(rows.values())))
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(row[c] for c in columns))
    console.print(table)
