"""Tunes hybrid fusion (RRF k, per-retriever weight, depth) on a BEIR split; prints a table.

Usage: .venv/bin/python -m bench.retrieval_tuning --data ../shared/eval/scifact --split train

Dense and BM25 rankings are fetched once (through the rag Retriever, depth 200) and
fused by the Retriever's own fusion code for every grid point (weighted RRF and
weighted score fusion), so the grid costs seconds, not searches.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.cli.beir import load_split
from services.cli.embedding_cache import cache_key, embed_cached
from services.cli.ir_metrics import evaluate
from services.cli.retrieval_eval import index_corpus, milvus_lite_server
from services.rag.retrieval.retriever import Hit, Mode, RetrievalConfig, Retriever

DEPTH = 200
KS = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0)
BM25_WEIGHTS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
DENSE_SHARES = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
DEPTHS = (20, 50, 100, 200)
METRICS = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")

Runs = dict[str, list[Hit]]


def _grid() -> list[RetrievalConfig]:
    rrf = [
        RetrievalConfig(fusion="rrf", rrf_k=k, dense_weight=1.0, bm25_weight=w, hybrid_depth=d)
        for k, w, d in itertools.product(KS, BM25_WEIGHTS, DEPTHS)
    ]
    score = [
        RetrievalConfig(fusion="score", dense_weight=a, bm25_weight=round(1 - a, 2), hybrid_depth=d)
        for a, d in itertools.product(DENSE_SHARES, DEPTHS)
    ]
    return rrf + score


def _label(config: RetrievalConfig) -> str:
    if config.fusion == "rrf":
        return f"rrf k={config.rrf_k:g} bm25 weight {config.bm25_weight:g} depth {config.hybrid_depth}"
    return f"score dense {config.dense_weight:g} / bm25 {config.bm25_weight:g} depth {config.hybrid_depth}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    split = load_split(args.data, args.split)
    corpus_vectors = embed_cached([d.passage for d in split.corpus])
    query_vectors = embed_cached(list(split.queries.values()))
    collection = "tune_" + cache_key("default", [d.doc_id for d in split.corpus])[:16]
    ids = list(split.queries)

    with tempfile.TemporaryDirectory(prefix="quarry-tune-") as tmp, milvus_lite_server(Path(tmp)) as uri:
        index_corpus(uri, collection, split, corpus_vectors)
        retriever = Retriever(uri, config=RetrievalConfig())

        async def ranked(mode: Mode) -> Runs:
            hits = await asyncio.gather(
                *(
                    retriever.search(
                        collection, query_vectors[i].tolist(), DEPTH, query=split.queries[q], mode=mode
                    )
                    for i, q in enumerate(ids)
                )
            )
            return dict(zip(ids, hits, strict=True))

        try:
            dense, bm25 = asyncio.run(ranked("dense")), asyncio.run(ranked("bm25"))
            rows: list[tuple[RetrievalConfig, dict[str, float]]] = []
            for config in _grid():
                retriever.config = config  # fusion only: the rankings above are reused
                depth = config.hybrid_depth
                fused = {
                    q: [h.doc_id for h, _ in retriever.fuse(dense[q][:depth], bm25[q][:depth], 100)]
                    for q in ids
                }
                rows.append((config, evaluate(fused, split.qrels)))
        finally:
            retriever.close()
    rows.sort(key=lambda r: -r[1]["nDCG@10"])

    table = Table(title=f"hybrid fusion grid on {args.data.name} {args.split} ({len(ids)} queries)")
    for column in ("config", *METRICS):
        table.add_column(column, justify="right")

    def add(label: str, scores: dict[str, float]) -> None:
        table.add_row(label, *(f"{scores[m]:.4f}" for m in METRICS))

    add("dense only", evaluate({q: [h.doc_id for h in dense[q]] for q in ids}, split.qrels))
    add("BM25 only", evaluate({q: [h.doc_id for h in bm25[q]] for q in ids}, split.qrels))
    for config, scores in rows:
        plain = config.fusion == "rrf" and config.bm25_weight == 1.0 and config.hybrid_depth == 100
        if plain and config.rrf_k in (20.0, 60.0):
            add(f"plain RRF k={config.rrf_k:g} depth 100", scores)
    add(
        "best weighted RRF: " + _label(next(c for c, _ in rows if c.fusion == "rrf")),
        next(s for c, s in rows if c.fusion == "rrf"),
    )
    for config, scores in rows[:6]:
        add(_label(config), scores)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
