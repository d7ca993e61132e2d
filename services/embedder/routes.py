"""Routes of the embedder; logic lives in serving.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from services.common.errors import APIError
from services.embedder.schemas import EmbeddingRequest, EmbeddingResponse, ModelCard, ModelList
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


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The one model served, in OpenAI's shape; listed while it loads too (its name is known)."""
    service: EmbeddingService | None = request.app.state.startup.service
    return ModelList(
        data=[
            ModelCard(
                id=request.app.state.model_name,
                created=request.app.state.started_at,
                dimensions=None if service is None else service.model.dimensions,
                backend=None if service is None else service.model.backend,
                precision=None if service is None else service.model.precision,
            )
        ]
    )
