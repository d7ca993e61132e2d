"""App factory for the embedder service.

The server answers at once; the model loads in the background. ``/health/ready``
turns 200 only once the model is loaded and a warm-up batch has gone through
the batcher, and embedding requests get 503 until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from services.common.health import NotReady
from services.common.logs import get_logger
from services.common.wiring import wire_service
from services.embedder import metrics
from services.embedder.batcher import Batcher, BatchLimits
from services.embedder.config import EmbedderSettings
from services.embedder.model import load_model
from services.embedder.routes import router
from services.embedder.serving import EmbeddingService

_log = get_logger(__name__)

# Warm-up text of a typical passage length, so the first real batch finds kernels and caches ready.
_WARMUP_TEXT = " ".join(["warm-up text for the embedding model"] * 8)


class _Startup:
    """Where model loading stands; readiness and routes read it."""

    def __init__(self) -> None:
        self.service: EmbeddingService | None = None
        self.error: str | None = None


def _limits(settings: EmbedderSettings) -> BatchLimits:
    return BatchLimits(
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue_items=settings.max_queue_items,
        merge_requests=settings.batching,
        bulk_batch_tokens=settings.bulk_batch_tokens,
    )


async def _load(app: FastAPI, settings: EmbedderSettings, startup: _Startup) -> None:
    try:
        model = await run_in_threadpool(load_model, settings)
        batcher = Batcher(model.encode, _limits(settings))
        batcher.start()
        app.state.batcher = batcher
        # Through the batcher, so readiness proves the whole path, not only the weights.
        await batcher.embed([_WARMUP_TEXT] * settings.max_batch_size, [64] * settings.max_batch_size)
    except Exception as exc:  # stay up and say why: readiness reports it, requests get 503
        startup.error = f"{type(exc).__name__}: {exc}"
        _log.error("embedder_load_failed", error=startup.error)
        return
    startup.service = EmbeddingService(model, batcher, settings)
    metrics.MODEL_READY.set(1)
    _log.info(
        "embedder_ready",
        backend=model.backend,
        device=model.device,
        precision=model.precision,
        dimensions=model.dimensions,
    )


def create_app(settings: EmbedderSettings | None = None) -> FastAPI:
    settings = settings or EmbedderSettings()
    startup = _Startup()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(app, settings, startup), name="embedder-load")
        yield
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        batcher: Batcher | None = getattr(app.state, "batcher", None)
        if batcher is not None:
            await batcher.stop()

    async def model_ready() -> None:
        if startup.error is not None:
            raise NotReady("model failed to load (see the log)")
        if startup.service is None:
            raise NotReady("model is loading")

    app = FastAPI(title="Quarry embedder", lifespan=lifespan)
    app.state.startup = startup
    app.state.model_name = settings.model_name
    app.state.started_at = int(time.time())
    app.include_router(router)
    wire_service(app, service="embedder", settings=settings, readiness={"model": model_ready})
    return app
