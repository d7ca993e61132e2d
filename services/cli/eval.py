"""``quarry eval``: retrieval quality on a BEIR data set for dense, BM25 and hybrid search.

The corpus is indexed in-process: passages are embedded with the embedder's own model
code (cached on disk), written with the ingest schema into a Milvus Lite server this
command starts (or the one ``--milvus-uri`` names), and searched through the rag
service's :class:`Retriever`, the same code ``/v1/search`` runs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.cli.api_key import api_key
from services.cli.beir import BeirSplit, load_split
from services.cli.embedding_cache import cache_key, embed_cached
from services.cli.ir_metrics import evaluate
from services.cli.suite import Child, free_port
from services.common import vector_schema as vs
from services.common.milvus_connect import connect_milvus
from services.rag.config import RagSettings
from services.rag.retrieval.retriever import MODES, Mode, RetrievalConfig, Retriever

console = Console()
DEPTH = 100  # Recall@100 needs a hundred results
_INSERT_BATCH = 500


@contextmanager
def milvus_lite_server(data_dir: Path) -> Iterator[str]:
    """A Milvus Lite server on a free port for the duration of the block; yields its URI."""
    port = free_port()
    milvus = shutil.which("milvus-lite") or str(Path(sys.executable).with_name("milvus-lite"))
    child = Child(
        "milvus",
        [
            milvus,
            "server",
            "--data-dir",
            str(data_dir / "milvus"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        {},
        None,
        data_dir / "milvus.log",
    )
    child.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or not child.alive():
                    raise RuntimeError(f"Milvus Lite did not start; see {child.log_path}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()


def index_corpus(uri: str, collection: str, split: BeirSplit, vectors: Any) -> None:
    """One chunk per document (title + abstract), written with the ingest schema."""

    client = connect_milvus(uri)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
        client.create_collection(
            collection,
            schema=vs.build_schema(int(vectors.shape[1])),
            index_params=vs.build_index_params(client),
        )
        rows = [
            {
                vs.CHUNK_ID: doc.doc_id,
                vs.DOC_ID: doc.doc_id,
                vs.DOC_HASH: "",
                vs.CHUNK_INDEX: 0,
                vs.TEXT: doc.passage,
                vs.TITLE: doc.title[:1024],
                vs.SOURCE: "beir",
                vs.METADATA: {},
                vs.DENSE: vector.tolist(),
            }
            for doc, vector in zip(split.corpus, vectors, strict=True)
        ]
        for start in range(0, len(rows), _INSERT_BATCH):
            client.insert(collection, rows[start : start + _INSERT_BATCH])
        client.flush(collection)  # sealed segments: see ChunkStore.flush
    finally:
        client.close()


async def run_queries(
    retriever: Retriever,
    collection: str,
    split: BeirSplit,
    query_vectors: Any,
    mode: Mode,
    depth: int = DEPTH,
) -> dict[str, list[str]]:
    """Every query's ranked doc ids; searches go concurrently so the batcher groups them."""
    ids = list(split.queries)

    async def one(index: int) -> list[str]:
        hits = await retriever.search(
            collection, query_vectors[index].tolist(), depth, query=split.queries[ids[index]], mode=mode
        )
        return [hit.doc_id for hit in hits]

    ranked = await asyncio.gather(*(one(i) for i in range(len(ids))))
    return dict(zip(ids, ranked, strict=True))


def evaluate_modes(
    uri: str, split: BeirSplit, config: RetrievalConfig, modes: list[Mode], model: str = ""
) -> dict[str, dict[str, float]]:
    corpus_vectors = embed_cached([doc.passage for doc in split.corpus], model)
    query_vectors = embed_cached(list(split.queries.values()), model)
    collection = "beir_" + cache_key(model or "default", [d.doc_id for d in split.corpus])[:16]
    index_corpus(uri, collection, split, corpus_vectors)

    async def _all() -> dict[str, dict[str, float]]:
        retriever = Retriever(uri, config=config)
        try:
            return {
                mode: evaluate(
                    await run_queries(retriever, collection, split, query_vectors, mode), split.qrels
                )
                for mode in modes
            }
        finally:
            retriever.close()

    return asyncio.run(_all())


def eval_command(
    data: Annotated[
        Path | None, typer.Option(help="BEIR data set folder (corpus.jsonl, queries.jsonl, qrels/).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="qrels split to score: train (tuning) or test (reporting).")
    ] = "test",
    milvus_uri: Annotated[
        str | None, typer.Option(help="Milvus to index into (default: a temporary Milvus Lite server).")
    ] = None,
    mode: Annotated[
        list[str] | None, typer.Option(help="Modes to score (default: dense, bm25, hybrid).")
    ] = None,
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
    modes: list[Mode] = [m for m in MODES if m in (mode or MODES)]  # type: ignore[misc]
    if not modes:
        raise typer.BadParameter(f"modes are {', '.join(MODES)}")
    started = time.perf_counter()
    beir = load_split(data, split)
    config = RetrievalConfig.from_settings(RagSettings())
    if milvus_uri:
        scores = evaluate_modes(milvus_uri, beir, config, modes)
    else:
        with tempfile.TemporaryDirectory(prefix="quarry-eval-") as tmp, milvus_lite_server(Path(tmp)) as uri:
            scores = evaluate_modes(uri, beir, config, modes)
    table = Table(
        title=f"{data.name} {split}: {len(beir.queries)} queries, {len(beir.corpus)} docs "
        f"({time.perf_counter() - started:.0f} s)"
    )
    table.add_column("mode")
    metrics = list(next(iter(scores.values())))
    for name in metrics:
        table.add_column(name, justify="right")
    for name, values in scores.items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in metrics))
    console.print(table)
    fusion = f"RRF k={config.rrf_k:g}" if config.fusion == "rrf" else "max-normalised scores"
    console.print(
        f"hybrid: {fusion}, dense weight {config.dense_weight:g}, BM25 weight {config.bm25_weight:g}, "
        f"depth {config.hybrid_depth}"
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
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
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
        tallies = answer_eval.run_answers(client, items, collection, variant or list(answer_eval.VARIANTS))
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
