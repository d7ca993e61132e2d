"""``quarry eval``'s index is built by the ingest pipeline and searched through rag's /v1/search.

A tiny BEIR-shaped corpus (two documents long enough for several chunks, three short ones)
goes through the eval twice against real processes: a Milvus Lite server, the embedder (the
real model) and rag, as ``quarry eval`` starts them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.chunking import chunker_for
from ingest.config import IngestSettings
from ingest.loaders import load_file
from services.cli.beir import load_split
from services.cli.embedding_cache import CHUNK_CACHE_FILE, VectorCache
from services.cli.ir_metrics import evaluate
from services.cli.retrieval_eval import EvalResult, eval_services, evaluate_product
from services.common.milvus_connect import connect_milvus
from services.rag.retrieval.retriever import MODES

LONG = ("glacier", "volcano")
QRELS = {"q1": "glacier", "q2": "bees", "q3": "tides"}


def _long_text(topic: str) -> str:
    # Distinct sentences (the chunker drops repeated pieces), about 450 tokens in all.
    return " ".join(
        f"Field survey {i} of the {topic} recorded reading {i * 7} at station {chr(65 + i % 26)}{i}."
        for i in range(30)
    )


def write_corpus(root: Path) -> Path:
    docs = [
        {"_id": topic, "title": f"The {topic} record", "text": _long_text(topic), "metadata": {}}
        for topic in LONG
    ] + [
        {"_id": doc_id, "title": doc_id.title(), "text": text}
        for doc_id, text in (
            ("coffee", "Roasting coffee beans darkens them and adds bitterness."),
            ("bees", "Honey bees pollinate flowering crops while they gather nectar."),
            ("tides", "Ocean tides rise and fall with the pull of the moon."),
        )
    ]
    queries = {
        "q1": "What did the field survey of the glacier record at each station?",
        "q2": "Which insects pollinate flowering crops?",
        "q3": "Why do ocean tides rise and fall?",
    }
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items())
    )
    return root


@dataclass
class Runs:
    data: Path
    first: EvalResult
    second: EvalResult
    stored_chunks: int
    cache_entries: tuple[int, int]  # after the first run, after the second


@pytest.fixture(scope="module")
async def runs(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> AsyncIterator[Runs]:
    root = tmp_path_factory.mktemp("eval")
    data = write_corpus(root / "beir")
    split = load_split(data, "test")
    cache_dir = root / "cache"
    with eval_services(root / "services", redis_url) as services:

        async def once() -> EvalResult:
            return await evaluate_product(
                services, data, split, MODES, cache_dir=cache_dir, concurrency=2, latency_queries=2
            )

        def entries() -> int:
            cache = VectorCache(cache_dir / CHUNK_CACHE_FILE)
            try:
                return cache.count()
            finally:
                cache.close()

        first = await once()
        after_first = entries()
        second = await once()
        client = connect_milvus(services.milvus_uri)
        try:
            stored = client.query(second.index.collection, filter="", output_fields=["count(*)"])
        finally:
            client.close()
        yield Runs(data, first, second, int(stored[0]["count(*)"]), (after_first, entries()))


def _expected_chunks(data: Path) -> tuple[int, dict[str, int]]:
    settings = IngestSettings()
    chunker = chunker_for(settings.chunk_tokens, settings.chunk_overlap_tokens)
    loaded = load_file(data / "corpus.jsonl", data)
    per_doc = {doc.doc_id: len(chunker.split(doc)) for doc in loaded.documents}
    return sum(per_doc.values()), per_doc


async def test_the_index_holds_the_chunks_ingest_makes(runs: Runs) -> None:
    total, per_doc = _expected_chunks(runs.data)
    assert all(per_doc[topic] >= 2 for topic in LONG), per_doc  # the corpus does test chunking
    assert runs.first.index.kind == "ingest"
    assert runs.first.index.chunks == total
    assert runs.first.index.documents == len(per_doc)
    assert runs.stored_chunks == total  # what Milvus holds, after the second build too


async def test_rankings_are_documents_each_once_and_scored_on_doc_ids(runs: Runs) -> None:
    split = load_split(runs.data, "test")
    corpus = {doc.doc_id for doc in split.corpus}
    for mode, run in runs.first.runs.items():
        for query, ranking in run.rankings.items():
            assert len(ranking) == len(set(ranking)), (mode, ranking)
            assert set(ranking) <= corpus
            # Each query's judged document is its best: the metrics see document ids.
            assert ranking[0] == QRELS[query], (mode, query, ranking)
        assert runs.first.scores[mode] == evaluate(run.rankings, split.qrels)
        assert runs.first.scores[mode]["MRR@10"] == 1.0
    # Dense search returns every chunk of this small collection: the glacier's several chunks
    # are there, and its ranking keeps the document once, where its best chunk was.
    chunks = runs.first.runs["dense"].chunk_docs["q1"]
    assert chunks.count("glacier") >= 2
    assert runs.first.runs["dense"].rankings["q1"].count("glacier") == 1
    assert all(len(run.latencies_ms) == 2 for run in runs.first.runs.values())


async def test_a_rerun_takes_every_chunk_vector_from_the_cache(runs: Runs) -> None:
    total, _ = _expected_chunks(runs.data)
    assert (runs.first.index.embedded, runs.first.index.cached) == (total, 0)
    assert (runs.second.index.embedded, runs.second.index.cached) == (0, total)
    assert runs.cache_entries == (total, total)
    assert runs.second.index.chunks == total
    assert runs.first.embedder_model.startswith("all-MiniLM-L6-v2|")
    for mode in MODES:
        assert runs.second.runs[mode].rankings == runs.first.runs[mode].rankings
