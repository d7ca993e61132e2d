"""What every service app gets: logs, request ids, metrics, health, one error envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from services.common.config import ServiceSettings
from services.common.errors import install_error_handlers
from services.common.health import ReadinessCheck, health_router
from services.common.logs import configure_logging
from services.common.metrics import MetricsMiddleware, metrics_router, metrics_server
from services.common.request_context import RequestContextMiddleware


def wire_service(
    app: FastAPI,
    *,
    service: str,
    settings: ServiceSettings,
    readiness: Mapping[str, ReadinessCheck],
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> None:
    configure_logging(service, settings.log_level, settings.log_json)
    install_error_handlers(app)
    app.include_router(health_router(readiness))
    if settings.metrics_port is None:
        app.include_router(metrics_router(before_scrape))
    else:
        _serve_metrics_apart(app, settings.host, settings.metrics_port, before_scrape)
    # Added last so it runs first: metrics see the final status, logs see the id.
    app.add_middleware(MetricsMiddleware, service=service)
    app.add_middleware(RequestContextMiddleware)


def _serve_metrics_apart(
    app: FastAPI, host: str, port: int, before_scrape: Callable[[], Awaitable[None]] | None
) -> None:
    """/metrics on its own port, for as long as the app runs (and not on the app's port)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        # Inside the app's own lifespan: a scrape may read what its startup made.
        async with inner(app) as state, metrics_server(host, port, before_scrape):
            yield state

    app.router.lifespan_context = lifespan
