"""``quarry eval --data``: retrieval quality of the product path on a BEIR data set.

By default the index is built and searched the way a user's is, with the product's own code
and processes:

- **Loading, chunking, embedding, indexing**: ``ingest.runner.ingest_path`` on the data set's
  ``corpus.jsonl``, the function ``quarry ingest corpus.jsonl`` runs: ingest's JSONL loader in
  its sandboxed loader pool, the collection's chunker with ``IngestSettings``' chunk size and
  overlap (``QUARRY_INGEST_*``, the defaults ``quarry ingest`` uses), ingest's own embedder
  client (chunk texts, ``truncate``, bulk priority, ingest's batches) talking to an embedder
  service process (``python -m services.embedder``, ``QUARRY_EMBEDDER_*`` settings), and
  ingest's ``Indexer`` and ``ChunkStore`` (upsert, flush) writing to Milvus.
- **Search**: a rag service process (``python -m services.rag``, ``QUARRY_RAG_*`` settings)
  asked ``POST /v1/search`` over HTTP/1.1 (as the gateway asks it) with ``top_k`` 100 and each
  ``mode``: rag's route, schemas, query embedding through the embedder, guarded retrieval,
  fusion and optional rerank, exactly as served.
- **Milvus**: a Milvus Lite server like ``quarry up``'s, fresh in a temporary folder (or the
  one ``--milvus-uri`` names; the eval collection is dropped and rebuilt there).

What differs from a user's path, and why:

- **Embedding cache**: ingest's embedder client is swapped (through ``ingest_path``'s
  ``embeddings_client``) for a subclass that first looks each chunk text up in a SQLite cache
  keyed by (served model, text), under ``--cache-dir``; only texts it lacks reach the embedder,
  and their vectors are stored as the embedder returned them. The served model is the
  embedder's ``/v1/models`` card: name, backend, precision and dimensions, so a change of any
  of them embeds afresh. Query embeddings are never cached (they are part of search latency).
- **Not in the path**: the gateway (keys, rate limits, its proxy hop), the ingest API, its
  queue and worker (the worker runs the same load, chunk, embed and index steps), and the
  llm service (search never calls it).
- **Chunks to documents**: ``/v1/search`` ranks chunks; the qrels judge documents. A ranking's
  chunks are mapped to their doc ids, the first occurrence of a doc keeping its rank and later
  chunks of the same doc dropped, as a user scoring documents would. So the 100 chunks asked
  for may hold fewer than 100 documents, and Recall@100 counts those.
- **Redis**: ingest's write lock, per-collection chunk settings and generation numbers, and
  rag's variant records, go to ``--redis-url`` (the eval collection's chunk settings are
  removed first, so ``IngestSettings`` decides them).
- **Latency**: the quality pass sends ``--concurrency`` searches at once (rag batches them as
  it would any clients'); then ``--latency-queries`` queries go one at a time, timed at the
  client: HTTP to rag, rag's embed call and the Milvus search, a one-client figure.

``--one-chunk-per-doc`` is the ablation the figures used to come from: one row per document
(title and abstract as one passage, no chunker), embedded in this process with the embedder's
torch model code (cached as one ``.npy`` per corpus), written with the ingest schema straight
into Milvus (no indexer), and searched through the same rag ``/v1/search``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from ingest.collections import CollectionConfig, CollectionConfigs
from ingest.config import IngestSettings
from ingest.runner import ingest_path
from ingest.store import ChunkStore
from services.cli.beir import BeirSplit
from services.cli.embedding_cache import (
    CHUNK_CACHE_FILE,
    DEFAULT_CACHE_DIR,
    CachingEmbeddingsClient,
    VectorCache,
    embed_cached,
)
from services.cli.ir_metrics import evaluate
from services.cli.suite import Child, Ports, Suite, free_port
from services.common import vector_schema as vs
from services.common.lexical import lexical_text
from services.common.milvus_connect import connect_milvus

DEPTH = 100  # Recall@100 needs a hundred results; /v1/search's top_k cap
_INSERT_BATCH = 500
_RETRIES = 5  # a 503 (a breaker open under load) is retried after its Retry-After


class EvalError(Exception):
    pass


# --- processes ---------------------------------------------------------------------------


@contextmanager
def milvus_lite_server(data_dir: Path) -> Iterator[str]:
    """A Milvus Lite server on a free port for the duration of the block; yields its URI."""
    port = free_port()
    milvus = shutil.which("milvus-lite") or str(Path(sys.executable).with_name("milvus-lite"))
    argv = [milvus, "server", "--data-dir", str(data_dir / "milvus"), "--host", "127.0.0.1"]
    child = Child("milvus", [*argv, "--port", str(port)], {}, None, data_dir / "milvus.log")
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


@dataclass(frozen=True)
class EvalServices:
    milvus_uri: str
    embedder_url: str
    rag_url: str
    redis_url: str
    lexical_index: str = ""  # where collections the eval makes keep their BM25 terms


@contextmanager
def eval_services(
    work_dir: Path, redis_url: str, milvus_uri: str | None = None, timeout_s: float = 300.0
) -> Iterator[EvalServices]:
    """Milvus Lite (unless ``milvus_uri``), the embedder and rag as ``quarry up`` runs them."""
    extra = {"QUARRY_RAG_MILVUS_URI": milvus_uri} if milvus_uri else {}
    suite = Suite(data_dir=work_dir, redis_url=redis_url, ports=Ports.free(), extra_env=extra)
    suite.define()
    stages = [("embedder",) if milvus_uri else ("milvus", "embedder"), ("rag",)]
    deadline = time.monotonic() + timeout_s
    try:
        for stage in stages:
            for name in stage:
                suite.children[name].start()
            for name in stage:
                suite.wait_ready(name, deadline)
        yield EvalServices(
            milvus_uri or suite.milvus_uri,
            suite.url("embedder"),
            suite.url("rag"),
            redis_url,
            # As quarry up keeps them, unless the collections live in another Milvus.
            "" if milvus_uri else str(suite.lexical_index),
        )
    finally:
        suite.stop()


def served_model(embedder_url: str) -> str:
    """The embedder's model card as a cache namespace: name, backend, precision, dimensions."""
    card = httpx.get(f"{embedder_url}/v1/models", timeout=30).raise_for_status().json()["data"][0]
    return "|".join(str(card.get(key) or "") for key in ("id", "backend", "precision", "dimensions"))


# --- the index -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexBuild:
    collection: str
    kind: str  # "ingest" or "one chunk per doc"
    documents: int
    chunks: int
    seconds: float
    embedded: int  # texts the embedder computed for this build
    cached: int  # texts whose vectors came from the cache
    chunk_tokens: int | None = None
    overlap_tokens: int | None = None


def collection_for(data: Path, suffix: str = "") -> str:
    slug = re.sub(r"[^A-Za-z0-9_]", "_", data.resolve().name)[:64]
    return f"eval_{slug}{suffix}"


Progress = Callable[[str], None]


async def build_ingest_index(
    corpus: Path,
    collection: str,
    settings: IngestSettings,
    cache: VectorCache,
    cache_model: str,
    progress: Progress | None = None,
) -> IndexBuild:
    """``corpus`` ingested into a fresh ``collection`` by ingest's own pipeline, embeddings cached."""
    store = ChunkStore.from_settings(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        if await store.exists(collection):
            await store.drop_collection(collection)
        # A fresh collection takes IngestSettings' chunking, as a new `quarry ingest` one does.
        await CollectionConfigs(redis, CollectionConfig(0, 0)).remove(collection)
    finally:
        store.close()
        await redis.aclose()
    hits, misses = cache.hits, cache.misses
    total, done, chunks = 0, 0, 0

    def loaded(documents: int) -> None:
        nonlocal total
        total = documents

    def indexed(documents: int, new_chunks: int) -> None:
        nonlocal done, chunks
        done, chunks = done + documents, chunks + new_chunks
        if progress is not None:
            progress(f"ingest: {done:,}/{total:,} documents, {chunks:,} chunks")

    started = time.perf_counter()
    report = await ingest_path(
        corpus,
        collection,
        settings,
        on_loaded=loaded,
        on_documents=indexed,
        embeddings_client=partial(CachingEmbeddingsClient, cache=cache, cache_model=cache_model),
    )
    seconds = time.perf_counter() - started
    if report.failed:
        first = next(iter(report.errors.items()), ("?", "?"))
        raise EvalError(f"{report.failed} documents failed to ingest (first: {first[0]}: {first[1]})")
    return IndexBuild(
        collection,
        "ingest",
        report.added + report.updated + report.unchanged,
        report.chunks,
        seconds,
        cache.misses - misses,
        cache.hits - hits,
        settings.chunk_tokens,
        settings.chunk_overlap_tokens,
    )


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
                vs.LEXICAL: lexical_text(doc.title, doc.text),  # the passage's words, once each
            }
            for doc, vector in zip(split.corpus, vectors, strict=True)
        ]
        for start in range(0, len(rows), _INSERT_BATCH):
            client.insert(collection, rows[start : start + _INSERT_BATCH])
        client.flush(collection)  # sealed segments: see ChunkStore.flush
    finally:
        client.close()


def build_passage_index(uri: str, collection: str, split: BeirSplit, cache_dir: Path) -> IndexBuild:
    """The ablation: one row per document, embedded in-process (see the module docstring)."""
    from services.cli.embedding_cache import cache_key

    passages = [doc.passage for doc in split.corpus]
    was_cached = (cache_dir / f"{cache_key('default', passages)}.npy").exists()
    started = time.perf_counter()
    vectors = embed_cached(passages, cache_dir=cache_dir)
    index_corpus(uri, collection, split, vectors)
    n = len(passages)
    return IndexBuild(
        collection,
        "one chunk per doc",
        n,
        n,
        time.perf_counter() - started,
        0 if was_cached else n,
        n if was_cached else 0,
    )


# --- search ------------------------------------------------------------------------------


def doc_ranking(chunk_doc_ids: Sequence[str]) -> list[str]:
    """Documents in the order of their best chunk: later chunks of a document are dropped."""
    return list(dict.fromkeys(chunk_doc_ids))


@dataclass
class ModeRun:
    mode: str
    chunk_docs: dict[str, list[str]]  # query id -> the doc id of each chunk hit, in rank order
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rankings(self) -> dict[str, list[str]]:
        return {query: doc_ranking(docs) for query, docs in self.chunk_docs.items()}


async def search_chunks(client: httpx.AsyncClient, collection: str, query: str, mode: str) -> list[str]:
    """One ``/v1/search`` call: the doc id of each chunk hit, best first."""
    body = {"query": query, "collection": collection, "top_k": DEPTH, "mode": mode}
    for attempt in range(_RETRIES + 1):
        response = await client.post("/v1/search", json=body)
        if response.status_code == 503 and attempt < _RETRIES:
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code != 200:
            raise EvalError(f"/v1/search answered {response.status_code}: {response.text[:500]}")
        return [hit["doc_id"] for hit in response.json()["hits"]]
    raise AssertionError("unreachable")


async def run_mode(
    client: httpx.AsyncClient,
    collection: str,
    queries: dict[str, str],
    mode: str,
    concurrency: int,
    latency_queries: int,
) -> ModeRun:
    """Every query at ``concurrency`` in flight, then the first ``latency_queries`` one at a time."""
    slots = asyncio.Semaphore(concurrency)
    ids = list(queries)

    async def one(query_id: str) -> list[str]:
        async with slots:
            return await search_chunks(client, collection, queries[query_id], mode)

    run = ModeRun(mode, dict(zip(ids, await asyncio.gather(*(one(q) for q in ids)), strict=True)))
    for query_id in ids[:latency_queries]:
        started = time.perf_counter()
        await search_chunks(client, collection, queries[query_id], mode)
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
    return run


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats' rounding
    return ordered[int(rank) - 1]


# --- the whole eval ------------------------------------------------------------------------


@dataclass
class EvalResult:
    index: IndexBuild
    runs: dict[str, ModeRun]
    scores: dict[str, dict[str, float]]
    cache_path: Path | None
    embedder_model: str


async def evaluate_product(
    services: EvalServices,
    data: Path,
    split: BeirSplit,
    modes: Sequence[str],
    *,
    one_chunk_per_doc: bool = False,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    concurrency: int = 8,
    latency_queries: int = 300,
    collection: str | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Build the index (ingest's pipeline, or the ablation's rows), then score every mode."""
    model = served_model(services.embedder_url)
    say = progress or (lambda _: None)
    cache_path: Path | None = None
    if one_chunk_per_doc:
        name = collection or collection_for(data, "_passages")
        say("embedding and writing one row per document")
        index = await asyncio.to_thread(build_passage_index, services.milvus_uri, name, split, cache_dir)
    else:
        name = collection or collection_for(data)
        cache_path = cache_dir / CHUNK_CACHE_FILE
        cache = VectorCache(cache_path)
        settings = IngestSettings(
            milvus_uri=services.milvus_uri,
            redis_url=services.redis_url,
            embedder_url=services.embedder_url,
            lexical_index=services.lexical_index,
        )
        try:
            index = await build_ingest_index(data / "corpus.jsonl", name, settings, cache, model, say)
        finally:
            cache.close()
    runs: dict[str, ModeRun] = {}
    # HTTP/1.1 with keep-alive, as the gateway calls rag.
    limits = httpx.Limits(max_connections=max(concurrency, 1), max_keepalive_connections=max(concurrency, 1))
    async with httpx.AsyncClient(base_url=services.rag_url, timeout=120, limits=limits) as client:
        for mode in modes:
            say(f"searching: {mode}")
            runs[mode] = await run_mode(client, name, split.queries, mode, concurrency, latency_queries)
    scores = {mode: evaluate(run.rankings, split.qrels) for mode, run in runs.items()}
    return EvalResult(index, runs, scores, cache_path, model)


def default_redis_url() -> str:
    return os.environ.get("QUARRY_REDIS_URL", "redis://127.0.0.1:6379/0")
