"""What every service app gets: logs, request ids, metrics, health, one error envelope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI

from services.common.config import ServiceSettings
from services.common.errors import install_error_handlers
from services.common.health import ReadinessCheck, health_router
from services.common.logs import configure_logging
from services.common.metrics import MetricsMiddleware, metrics_router
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
    app.include_router(metrics_router(before_scrape))
    # Added last so it runs first: metrics see the final status, logs see the id.
    app.add_middleware(MetricsMiddleware, service=service)
    app.add_middleware(RequestContextMiddleware)
