"""Routes of the rag service; logic lives in serving.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from services.common.event_stream import EVENT_STREAM
from services.rag.feedback import FeedbackService
from services.rag.retrieval.search import SearchService
from services.rag.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResponse,
    VariantInfo,
    VariantsResponse,
)
from services.rag.variants.registry import VariantRegistry

router = APIRouter()
# Set by the gateway, the only way in: the API key's id (who may give feedback, and whose
# traffic sticks to one variant when the request names no user).
KEY_ID_HEADER = "x-quarry-key-id"


async def get_variants(request: Request) -> VariantRegistry:
    registry: VariantRegistry = request.app.state.variants
    return registry


@router.post(
    "/v1/query",
    response_model=None,
    # Documented both ways: JSON by default, server-sent events with `stream: true`.
    responses={
        200: {
            "model": QueryResponse,
            "content": EVENT_STREAM,
        }
    },
)
async def query(
    body: QueryRequest,
    variants: VariantRegistry = Depends(get_variants),
    key_id: str = Header("", alias=KEY_ID_HEADER, include_in_schema=False),
) -> Response:
    service = variants.route(body.user, key_id, body.variant)
    if body.stream:
        # Every stage that can fail runs before the stream opens: errors stay JSON answers.
        events = await service.stream(body, key_id)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    return _json(await service.answer(body, key_id))


async def get_feedback_service(request: Request) -> FeedbackService:
    service: FeedbackService = request.app.state.feedback
    return service


@router.post("/v1/feedback", response_model=FeedbackResponse)
async def feedback(
    body: FeedbackRequest,
    service: FeedbackService = Depends(get_feedback_service),
    key_id: str = Header("", alias=KEY_ID_HEADER, include_in_schema=False),
) -> FeedbackResponse:
    return await service.give(body, key_id)


@router.get("/v1/variants", response_model=VariantsResponse)
async def list_variants(variants: VariantRegistry = Depends(get_variants)) -> VariantsResponse:
    shares = variants.shares()
    control = variants.file.control_name
    return VariantsResponse(
        variants=[
            VariantInfo(
                id=v.id,
                name=v.name,
                version=v.version,
                weight=v.weight,
                share=round(shares[v.id], 6),
                control=v.name == control,
                description=v.description,
            )
            for v in variants.file.variants
        ],
        source=str(variants.path) if variants.path else "default",
    )


async def get_search_service(request: Request) -> SearchService:
    service: SearchService = request.app.state.search_service
    return service


@router.post("/v1/search", response_model=None, responses={200: {"model": SearchResponse}})
async def search(body: SearchRequest, service: SearchService = Depends(get_search_service)) -> Response:
    return _json(await service.search(body))


def _json(model: BaseModel) -> Response:
    # pydantic's own serializer: FastAPI's generic jsonable_encoder + json.dumps cost rag about
    # a tenth of a cached answer's CPU. The models are the documented responses above.
    return Response(model.model_dump_json(), media_type="application/json")
