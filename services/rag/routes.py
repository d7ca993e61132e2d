"""Routes of the rag service; logic lives in serving.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from services.rag.retrieval.search import SearchService
from services.rag.schemas import QueryRequest, QueryResponse, SearchRequest, SearchResponse
from services.rag.serving import QueryService

router = APIRouter()


async def get_query_service(request: Request) -> QueryService:
    service: QueryService = request.app.state.query_service
    return service


@router.post(
    "/v1/query",
    response_model=None,
    # Documented both ways: JSON by default, server-sent events with `stream: true`.
    responses={
        200: {
            "model": QueryResponse,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def query(body: QueryRequest, service: QueryService = Depends(get_query_service)) -> Response:
    if body.stream:
        # Every stage that can fail runs before the stream opens: errors stay JSON answers.
        events = await service.stream(body)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    return _json(await service.answer(body))


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
