"""Wire schemas of ``/v1/embeddings`` (OpenAI-compatible)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from services.embedder.priority import Priority


class EmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None
    # Quarry extension: cut over-long inputs to the model's limit instead of failing.
    truncate: bool = False
    # Quarry extension: queries run before bulk texts; unset, one text is a query, a list bulk.
    priority: Priority | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "quarry"
    # Quarry extension, as the llm's max_model_len: what a client needs to size a collection.
    dimensions: int | None = None
    # What computes the vectors (null while the model loads): caches of vectors key on them.
    backend: str | None = None
    precision: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
