"""The ``/v1/search`` path: embed the query, retrieve (dense, BM25 or hybrid), optionally rerank."""

from __future__ import annotations

import time

from services.common.context import current_request_id
from services.rag.config import RagSettings
from services.rag.retrieval.guarded import GuardedRetrieval
from services.rag.retrieval.reranker import Reranker
from services.rag.retrieval.retriever import Hit
from services.rag.schemas import SearchHit, SearchRequest, SearchResponse, filter_expression
from services.rag.stage_timing import ms_since


class SearchService:
    def __init__(
        self,
        settings: RagSettings,
        retrieval: GuardedRetrieval,
        reranker: Reranker | None = None,
    ) -> None:
        self.settings = settings
        self.retrieval = retrieval
        self.reranker = reranker

    async def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        mode = request.mode or self.settings.retrieval_mode
        rerank = self.reranker is not None and request.rerank
        depth = max(request.top_k, self.settings.rerank_depth) if rerank else request.top_k
        _, hits = await self.retrieval.embed_and_retrieve(
            request.collection,
            request.query,
            depth,
            timings=timings,
            mode=mode,
            filter_expr=filter_expression(request.filters),
        )

        if rerank and self.reranker is not None:
            mark = time.perf_counter()
            hits = (await self.reranker.rerank(request.query, hits))[: request.top_k]
            timings["rerank"] = ms_since(mark)
        timings["total"] = ms_since(started)
        return SearchResponse(
            hits=[_wire(rank, hit) for rank, hit in enumerate(hits, start=1)],
            mode=mode,
            reranked=rerank,
            timings_ms=timings,
            request_id=current_request_id(),
        )


def _wire(rank: int, hit: Hit) -> SearchHit:
    return SearchHit(
        rank=rank,
        chunk_id=hit.chunk_id,
        doc_id=hit.doc_id,
        chunk_index=hit.chunk_index,
        title=hit.title,
        source=hit.source,
        text=hit.text,
        metadata=hit.metadata,
        score=round(hit.score, 6),
        relevance=_round(hit.dense_score),
        bm25=_round(hit.bm25_score),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
