"""Optional cross-encoder rerank stage: rescores the retriever's best candidates."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

from services.rag.retrieval.retriever import Hit


class Reranker:
    def __init__(self, model_path: str, device: str = "cpu") -> None:
        # Weights come from a local folder only; never reach for a hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        self._model: Any = CrossEncoder(model_path, device=device)
        self.model_path = model_path

    def _scores(self, query: str, texts: list[str]) -> list[float]:
        scores = self._model.predict([(query, text) for text in texts], show_progress_bar=False)
        return [float(s) for s in scores]

    async def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        """``hits`` reordered by the cross-encoder's score (which replaces ``score``)."""
        if not hits:
            return []
        scores = await asyncio.to_thread(self._scores, query, [hit.text for hit in hits])
        order = sorted(range(len(hits)), key=lambda i: -scores[i])  # stable on ties
        return [replace(hits[i], score=scores[i]) for i in order]
