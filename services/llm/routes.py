"""Routes of the LLM service; logic lives in serving.py."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response

from services.common.disconnect import cancel_on_disconnect
from services.llm.schemas import ChatCompletionRequest, ChatCompletionResponse, ModelCard, ModelList
from services.llm.serving import ChatService
from services.llm.sse import EventStreamResponse

router = APIRouter()


async def get_chat(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat_service
    return service


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, chat: ChatService = Depends(get_chat)
) -> ChatCompletionResponse | Response:
    # A client that leaves while queued gives its place up (499, from the error handlers).
    if body.stream:
        opened = await cancel_on_disconnect(request, chat.open_stream(body))
        return EventStreamResponse(opened.events, opened.lease)
    return await cancel_on_disconnect(request, chat.complete(body))


@router.get("/v1/models", response_model=ModelList)
async def list_models(chat: ChatService = Depends(get_chat)) -> ModelList:
    backend = chat.backend
    card = ModelCard(
        id=backend.model_id,
        created=int(time.time()),
        max_model_len=backend.context_window,
        max_tokens=chat.settings.max_tokens_cap,
    )
    return ModelList(data=[card])
