"""App factory for the ingest API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from ingest.api.routes import router
from ingest.api.serving import IngestService
from ingest.config import IngestSettings
from ingest.metrics import read_queue
from ingest.queue import create_queue
from ingest.resources import open_resources
from services.common.wiring import wire_service


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    stack = AsyncExitStack()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with stack:
            resources = await stack.enter_async_context(open_resources(settings))
            queue = create_queue(settings)
            stack.push_async_callback(queue.disconnect)
            app.state.ingest_service = IngestService(resources, queue)
            app.state.queue = queue
            app.state.resources = resources
            yield

    async def redis_ready() -> None:
        await app.state.resources.redis.ping()

    async def milvus_ready() -> None:
        await app.state.resources.store.list_collections()

    async def queue_figures() -> None:
        await read_queue(app.state.queue)

    app = FastAPI(title="Quarry ingest", lifespan=lifespan)
    app.include_router(router)
    wire_service(
        app,
        service="ingest",
        settings=settings,
        readiness={"redis": redis_ready, "milvus": milvus_ready},
        before_scrape=queue_figures,
    )
    return app
