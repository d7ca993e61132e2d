"""Routes of the embedder; logic lives in serving.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from services.common.errors import APIError
from services.embedder.schemas import EmbeddingRequest, EmbeddingResponse
from services.embedder.serving import EmbeddingService

router = APIRouter()


async def get_service(request: Request) -> EmbeddingService:
    startup = request.app.state.startup
    service: EmbeddingService | None = startup.service
    if service is None:
        why = "the model failed to load" if startup.error else "the model is loading"
        raise APIError(503, "model_unavailable", why, headers={"Retry-After": "5"})
    return service


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(
    body: EmbeddingRequest, service: EmbeddingService = Depends(get_service)
) -> EmbeddingResponse:
    return await service.embed(body)
