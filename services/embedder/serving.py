"""Turns an embeddings request into vectors: limits, batching, OpenAI wire format."""

from __future__ import annotations

import base64

import numpy as np
from starlette.concurrency import run_in_threadpool

from services.common.errors import APIError
from services.embedder.batcher import Batcher, ModelFailed, QueueFull
from services.embedder.config import EmbedderSettings
from services.embedder.model import EmbeddingModel, Vectors
from services.embedder.priority import Priority, default_priority
from services.embedder.schemas import EmbeddingData, EmbeddingRequest, EmbeddingResponse, Usage

# Tokenising a few texts takes microseconds; more would stall the event loop.
_INLINE_TOKENIZE_MAX = 32
# No token of any vocabulary we serve is this long, so a text past max_tokens x this is over
# the limit for sure; checking characters first bounds tokenizer work on hostile input (and a
# single huge "word" would otherwise tokenize to one [UNK] and slip through).
_MAX_CHARS_PER_TOKEN = 32


class EmbeddingService:
    def __init__(self, model: EmbeddingModel, batcher: Batcher, settings: EmbedderSettings) -> None:
        self.model = model
        self.batcher = batcher
        self.settings = settings

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        self._check_shape(texts, request.dimensions)
        texts = self._check_characters(texts, request.truncate)
        tokens = await self._count_tokens(texts)
        limit = self.model.max_tokens
        if not request.truncate:
            self._check_lengths(tokens, limit)
        billed = [min(n, limit) for n in tokens]
        priority = request.priority or default_priority(len(texts))
        vectors = await self._vectors(texts, billed, priority)
        if request.dimensions is not None and request.dimensions < vectors.shape[1]:
            vectors = _shorten(vectors, request.dimensions)
        data = [
            EmbeddingData(index=i, embedding=_encode_vector(v, request.encoding_format))
            for i, v in enumerate(vectors)
        ]
        used = sum(billed)
        return EmbeddingResponse(
            data=data,
            model=request.model or self.settings.model_name,
            usage=Usage(prompt_tokens=used, total_tokens=used),
        )

    def _check_shape(self, texts: list[str], dimensions: int | None) -> None:
        if not texts:
            raise APIError(422, "empty_input", "input must hold at least one text")
        most = self.settings.max_items_per_request
        if len(texts) > most:
            raise APIError(413, "too_many_inputs", f"{len(texts)} inputs; at most {most} per request")
        for i, text in enumerate(texts):
            if not text:
                raise APIError(422, "empty_input", f"input[{i}] is an empty string")
        if dimensions is not None and dimensions > self.model.dimensions:
            raise APIError(
                422,
                "invalid_dimensions",
                f"dimensions {dimensions} exceeds the model's {self.model.dimensions}",
            )

    def _check_characters(self, texts: list[str], truncate: bool) -> list[str]:
        cap = self.model.max_tokens * _MAX_CHARS_PER_TOKEN
        checked = []
        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise APIError(
                    422, "invalid_text", f"input[{i}] is not valid Unicode (lone surrogate)"
                ) from exc
            if len(text) > cap:
                if not truncate:
                    raise APIError(
                        413,
                        "input_too_long",
                        f"input[{i}] has {len(text)} characters; the model's limit is "
                        f"{self.model.max_tokens} tokens (set truncate: true to cut it)",
                    )
                text = text[:cap]
            checked.append(text)
        return checked

    @staticmethod
    def _check_lengths(tokens: list[int], limit: int) -> None:
        for i, n in enumerate(tokens):
            if n > limit:
                raise APIError(
                    413,
                    "input_too_long",
                    f"input[{i}] has {n} tokens; the model's limit is {limit} tokens"
                    " (set truncate: true to cut it)",
                )

    async def _count_tokens(self, texts: list[str]) -> list[int]:
        if len(texts) <= _INLINE_TOKENIZE_MAX:
            return self.model.count_tokens(texts)
        return await run_in_threadpool(self.model.count_tokens, texts)

    async def _vectors(self, texts: list[str], tokens: list[int], priority: Priority) -> Vectors:
        try:
            return await self.batcher.embed(texts, tokens, priority)
        except QueueFull as exc:
            retry = self.batcher.retry_after_s()
            raise APIError(
                429,
                "queue_full",
                f"embedder is at capacity ({exc}); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            ) from exc
        except ModelFailed as exc:
            raise APIError(503, "model_failed", f"the model failed on this batch: {exc}") from exc


def _shorten(vectors: Vectors, dimensions: int) -> Vectors:
    """Matryoshka-style truncation: keep the leading dimensions, back to unit length."""
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.maximum(norms, 1e-12)  # type: ignore[no-any-return]


def _encode_vector(vector: Vectors, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's layout: little-endian float32 bytes, base64-encoded.
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()  # type: ignore[no-any-return]
