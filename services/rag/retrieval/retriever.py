"""Search over a collection's chunks in Milvus: dense, BM25 full text, or both fused."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from services.common import vector_schema as vs
from services.common.lexical import lexical_query
from services.common.lexical_index import LexicalIndex, shared_index
from services.common.logs import get_logger
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_in
from services.rag.rag_metrics import LEXICAL_SEARCHES
from services.rag.retrieval.fusion import weighted_rrf, weighted_score_fusion
from services.rag.retrieval.search_batcher import BatchKey, Results, SearchBatcher

if TYPE_CHECKING:
    from services.rag.config import RagSettings

Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
Fusion = Literal["score", "rrf"]
# Collections seen to exist. A name not among them is checked before it is searched, since a
# search of a missing collection makes pymilvus log an error with a traceback: a client's
# typo would fill the log. Bounded, as names come from clients. Each entry also says whether
# BM25 reads the collection's ``lexical`` field; it is learnt again after a while, since
# ingest may drop a collection and make it anew.
_KNOWN_CAP = 1024
_KNOWN_TTL_S = 30.0
_log = get_logger(__name__)


@dataclass(frozen=True)
class CollectionLayout:
    lexical: bool  # BM25 reads the ``lexical`` field, not ``text``
    index: LexicalIndex | None
    learnt_at: float = 0.0


# What a collection is taken to be while Milvus cannot describe it: today's layout, Milvus' BM25.
_UNKNOWN = CollectionLayout(lexical=True, index=None)


class CollectionNotFound(Exception):
    pass


class RetrievalUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    doc_id: str
    chunk_index: int
    text: str
    title: str
    source: str
    metadata: dict[str, Any]
    score: float  # the ranking score: hybrid fuses and rescales, so the best hit is about 1.0
    # Raw relevance, comparable across queries: cosine to the query, and the BM25 score.
    dense_score: float | None = None
    bm25_score: float | None = None


@dataclass(frozen=True)
class RetrievalConfig:
    mode: Mode = "hybrid"
    fusion: Fusion = "score"
    rrf_k: float = 5.0
    dense_weight: float = 0.6
    bm25_weight: float = 0.4
    hybrid_depth: int = 100
    batching: bool = True
    batch_window_s: float = 0.003
    max_batch: int = 64

    @classmethod
    def from_settings(cls, settings: RagSettings) -> RetrievalConfig:
        return cls(
            mode=settings.retrieval_mode,
            fusion=settings.hybrid_fusion,
            rrf_k=settings.rrf_k,
            dense_weight=settings.fusion_dense_weight,
            bm25_weight=settings.fusion_bm25_weight,
            hybrid_depth=settings.hybrid_depth,
            batching=settings.search_batching,
            batch_window_s=settings.search_batch_window_ms / 1000,
            max_batch=settings.search_max_batch,
        )


class Retriever:
    def __init__(
        self,
        uri: str,
        token: str = "",
        config: RetrievalConfig | None = None,
    ) -> None:
        self._client: Any = connect_milvus(uri, token, timeout=10)
        self.config = config or RetrievalConfig()
        self._batcher = SearchBatcher(self._search_many, self.config.batch_window_s, self.config.max_batch)
        self._known: OrderedDict[str, CollectionLayout] = OrderedDict()

    @property
    def batches_sent(self) -> int:
        return self._batcher.batches_sent

    async def ping(self) -> None:
        await asyncio.to_thread(self._client.list_collections)

    async def search(
        self,
        collection: str,
        vector: list[float] | Awaitable[list[float]] | None,
        top_k: int,
        *,
        query: str | None = None,
        mode: Mode | None = None,
        filter_expr: str = "",
        config: RetrievalConfig | None = None,
    ) -> list[Hit]:
        """The ``top_k`` best chunks; ``mode`` defaults to the configured one, and ``config``
        (a variant's mode and fusion) to the retriever's own.

        ``filter_expr`` must come from :func:`services.rag.retrieval.filters.compile_filters`.
        Without query text only dense search is possible, so that is what runs. ``vector`` may
        still be on its way (a future, as a retry awaits it again): a hybrid search then runs
        its BM25 leg while the query is being embedded, since that leg needs only the text.
        """
        config = config or self.config
        mode = mode or config.mode
        if query is None or not query.strip():
            mode = "dense"
        if mode != "bm25" and vector is None:
            raise ValueError(f"{mode} search needs a query vector")
        layout = await self._check_exists(collection)
        # A lexical index holds the chunks' fields too: each leg then ranks chunk ids, and only
        # the best are read in full, from it (most of a hybrid depth's hits never reach the answer).
        store = layout.index if layout.lexical else None
        ids_only = store is not None
        if mode == "dense":
            hits = await self._ranked(
                collection, vs.DENSE, await _ready(vector), top_k, filter_expr, ids_only=ids_only
            )
            return await self._filled(collection, hits, store)
        assert query is not None
        # A lexical field holds normalised terms, so the query is put through the same steps.
        terms = lexical_query(query) if layout.lexical else query
        index = None if filter_expr else store  # the index scores BM25 over every chunk
        if mode == "bm25":
            hits = await self._ranked(collection, vs.SPARSE, terms, top_k, filter_expr, index, ids_only)
            return await self._filled(collection, hits, store)
        depth = max(top_k, config.hybrid_depth)
        lexical_leg = asyncio.ensure_future(
            self._ranked(collection, vs.SPARSE, terms, depth, filter_expr, index, ids_only)
        )
        try:
            dense = await self._ranked(
                collection, vs.DENSE, await _ready(vector), depth, filter_expr, ids_only=ids_only
            )
            bm25 = await lexical_leg
        finally:
            settle(lexical_leg)
        cosine = {h.chunk_id: h.dense_score for h in dense}
        matched = {h.chunk_id: h.bm25_score for h in bm25}
        fused = [
            replace(
                hit, score=score, dense_score=cosine.get(hit.chunk_id), bm25_score=matched.get(hit.chunk_id)
            )
            for hit, score in self.fuse(dense, bm25, top_k, config)
        ]
        return await self._filled(collection, fused, store)

    def fuse(
        self, dense: list[Hit], bm25: list[Hit], limit: int, config: RetrievalConfig | None = None
    ) -> list[tuple[Hit, float]]:
        config = config or self.config
        weights = (config.dense_weight, config.bm25_weight)
        if config.fusion == "rrf":
            return weighted_rrf([(dense, weights[0]), (bm25, weights[1])], config.rrf_k, limit, key=_chunk_id)
        return weighted_score_fusion(
            [(dense, [h.score for h in dense], weights[0]), (bm25, [h.score for h in bm25], weights[1])],
            limit,
            key=_chunk_id,
        )

    async def _ranked(
        self,
        collection: str,
        anns_field: str,
        data: Any,
        limit: int,
        filter_expr: str,
        index: LexicalIndex | None = None,
        ids_only: bool = False,
    ) -> list[Hit]:
        """``index``: a lexical index that holds ``collection``'s BM25 terms, tried first; it
        ranks chunk ids, so it is given only with ``ids_only``: hits that carry their chunk id
        and scores alone (see :meth:`_filled`)."""
        from pymilvus.exceptions import MilvusException

        if anns_field == vs.SPARSE and not str(data).strip():
            return []  # only stop words: no term to score
        fields = (vs.CHUNK_ID,) if ids_only else tuple(vs.OUTPUT_FIELDS)
        key = BatchKey(collection, anns_field, filter_expr, limit, fields)
        try:
            found = await _from_index(index, key, data) if index is not None else None
            if found is not None:
                results = found
            elif self.config.batching:
                results = await self._batcher.submit(key, data)
            else:
                results = (await asyncio.to_thread(self._search_many, key, [data]))[0]
        except MilvusException as exc:
            if await self._has_collection(collection) is False:
                self._known.pop(collection, None)
                raise CollectionNotFound(collection) from exc
            raise RetrievalUnavailable(str(exc)) from exc
        hits = [_hit(r) for r in results]
        if anns_field == vs.SPARSE:
            # BM25 scores are non-negative; Milvus Lite reports them negated (as distances).
            return [replace(h, score=abs(h.score), bm25_score=abs(h.score)) for h in hits]
        return [replace(h, dense_score=h.score) for h in hits]

    async def _check_exists(self, collection: str) -> CollectionLayout:
        """Raises CollectionNotFound for a missing collection; says whether BM25 reads its
        ``lexical`` field, and which lexical index holds its terms. A store that cannot answer
        is left to the search to report."""
        known = self._known.get(collection)
        if known is not None and time.monotonic() - known.learnt_at < _KNOWN_TTL_S:
            self._known.move_to_end(collection)
            return known
        exists = await self._has_collection(collection)
        if exists is False:
            self._known.pop(collection, None)
            raise CollectionNotFound(collection)
        if not exists:
            return known or _UNKNOWN
        try:
            description = await asyncio.to_thread(self._client.describe_collection, collection)
            path = vs.lexical_index_path(description)
            index = shared_index(path) if path else None
        except Exception:
            return known or _UNKNOWN
        layout = CollectionLayout(vs.bm25_input(description) == vs.LEXICAL, index, time.monotonic())
        self._known[collection] = layout
        self._known.move_to_end(collection)
        while len(self._known) > _KNOWN_CAP:
            self._known.popitem(last=False)
        return layout

    async def _has_collection(self, collection: str) -> bool | None:
        """Whether the collection exists; None when Milvus cannot say (the search then reports
        the store as unavailable, not the collection as missing)."""
        try:
            return bool(await asyncio.to_thread(self._client.has_collection, collection))
        except Exception:
            return None

    def _search_many(self, key: BatchKey, data: list[Any]) -> Results:
        results = self._client.search(
            key.collection,
            data=data,
            anns_field=key.anns_field,
            limit=key.limit,
            filter=key.filter_expr,
            output_fields=list(key.output_fields),
        )
        return [list(r) for r in results]

    async def _filled(self, collection: str, hits: list[Hit], index: LexicalIndex | None) -> list[Hit]:
        """``hits`` (chunk ids and scores, when ``index`` is given) with their stored fields,
        from the index while it holds the collection whole, else (or for any it lacks) from
        Milvus. Without an index the hits came whole."""
        from pymilvus.exceptions import MilvusException

        if index is None:
            return hits
        ids = [h.chunk_id for h in hits]

        def read() -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            with contextlib.suppress(sqlite3.Error):
                if index is not None and index.searchable(collection):
                    found = index.rows(collection, ids)
            if missing := [i for i in ids if i not in found]:
                rows = self._client.query(
                    collection, filter=field_in(vs.CHUNK_ID, missing), output_fields=vs.OUTPUT_FIELDS
                )
                found |= {row[vs.CHUNK_ID]: row for row in rows}
            return found

        try:
            entities = await asyncio.to_thread(read) if ids else {}
        except MilvusException as exc:
            raise RetrievalUnavailable(str(exc)) from exc
        # A chunk deleted between the ranking and this read is left out.
        return [
            replace(
                _hit({"entity": entities[h.chunk_id], "distance": h.score}),
                score=h.score,
                dense_score=h.dense_score,
                bm25_score=h.bm25_score,
            )
            for h in hits
            if h.chunk_id in entities
        ]

    def close(self) -> None:
        self._client.close()


async def _ready(vector: list[float] | Awaitable[list[float]] | None) -> list[float] | None:
    return vector if vector is None or isinstance(vector, list) else await vector


def settle(task: asyncio.Future[Any]) -> None:
    """Lets ``task`` finish on its own, a failure it ends in marked as seen: its caller has
    already failed for another reason. It is not cancelled, since a guard's breaker would
    count the cancelled call against its dependency."""
    task.add_done_callback(_seen)


def _seen(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _from_index(index: LexicalIndex, key: BatchKey, terms: str) -> list[dict[str, Any]] | None:
    """BM25 hits from the lexical index, or None where Milvus must answer: the index does not
    hold the collection whole now, or it fails (it is only a faster copy)."""

    def search() -> list[dict[str, Any]] | None:
        if not index.searchable(key.collection):
            return None
        return index.search(key.collection, terms, key.limit)

    try:
        hits = await asyncio.to_thread(search)
    except sqlite3.Error as exc:
        _log.warning("lexical_index_failed", collection=key.collection, error=str(exc))
        hits = None
    LEXICAL_SEARCHES.labels(engine="milvus" if hits is None else "lexical_index").inc()
    return hits


def _chunk_id(hit: Hit) -> str:
    return hit.chunk_id


def _hit(result: dict[str, Any]) -> Hit:
    """A search result as a hit; one that carries only its chunk id gets empty fields."""
    entity = result["entity"]
    return Hit(
        chunk_id=entity[vs.CHUNK_ID],
        doc_id=entity.get(vs.DOC_ID, ""),
        chunk_index=int(entity.get(vs.CHUNK_INDEX, 0)),
        text=entity.get(vs.TEXT, ""),
        title=entity.get(vs.TITLE, ""),
        source=entity.get(vs.SOURCE, ""),
        metadata=entity.get(vs.METADATA) or {},
        score=float(result["distance"]),
    )
