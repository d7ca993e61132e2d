"""App factory for the LLM service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from services.common.health import NotReady
from services.common.logs import get_logger
from services.common.wiring import wire_service
from services.llm.backends.base import GenerationBackend
from services.llm.config import LLMSettings
from services.llm.routes import router
from services.llm.serving import ChatService

_log = get_logger(__name__)


def _load_backend(settings: LLMSettings) -> GenerationBackend:
    if settings.backend == "vllm":
        from services.llm.backends.vllm import VLLMBackend

        return VLLMBackend(
            settings.model,
            settings.model_name,
            settings.context_window,
            settings.slots,
            settings.gpu_memory_utilization,
        )
    from services.llm.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(
        settings.model, settings.model_name, settings.context_window, settings.threads, settings.slots
    )


def create_app(settings: LLMSettings | None = None) -> FastAPI:
    settings = settings or LLMSettings()
    state: dict[str, bool] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = (
            _load_backend(settings)
            if settings.backend == "vllm"
            else await run_in_threadpool(_load_backend, settings)
        )
        app.state.chat_service = ChatService(backend, settings)
        state["ready"] = True
        _log.info("llm_ready", backend=settings.backend, model=backend.model_id)
        try:
            yield
        finally:
            await backend.aclose()

    async def model_loaded() -> None:
        if not state["ready"]:
            raise NotReady("model is loading")

    app = FastAPI(title="Quarry LLM", lifespan=lifespan)
    app.include_router(router)
    wire_service(app, service="llm", settings=settings, readiness={"model": model_loaded})
    return app
