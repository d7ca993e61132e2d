"""Prometheus request metrics and the ``/metrics`` route.

One registry per process: scale a service by replicas (each scraped on its own),
not by workers inside one container.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import install_error_handlers
from services.common.logs import get_logger
from services.common.request_context import RequestContextMiddleware

_log = get_logger(__name__)

HTTP_REQUESTS = Counter(
    "quarry_http_requests_total",
    "HTTP requests served, by route and status.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "quarry_http_request_duration_seconds",
    "Time from request start to the end of the response body.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_IN_FLIGHT = Gauge("quarry_http_requests_in_flight", "Requests being served now.", ["service"])


def record_request(service: str, method: str, route: str, status: int, started: float) -> None:
    """Counts a served request and its duration; ``route`` is a template, never a raw path."""
    HTTP_REQUESTS.labels(service, method, route, str(status)).inc()
    HTTP_LATENCY.labels(service, method, route).observe(time.perf_counter() - started)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        in_flight = HTTP_IN_FLIGHT.labels(self.service)
        in_flight.inc()

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            in_flight.dec()
            # The route template, not the raw path, keeps label cardinality bounded.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            record_request(self.service, scope["method"], route, status, start)


def metrics_router(before_scrape: Callable[[], Awaitable[None]] | None = None) -> APIRouter:
    """``/metrics``; ``before_scrape`` sets gauges read from outside the process, per scrape."""
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def metrics() -> Response:
        if before_scrape is not None:
            await before_scrape()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


@asynccontextmanager
async def metrics_server(
    host: str, port: int, before_scrape: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[None]:
    """Serves ``/metrics`` alone on ``host:port`` while the context lasts.

    It runs on the app's own event loop, in the app's process, so it reads the same registry
    and ``before_scrape`` can use the app's clients. The socket is bound here, before the app
    counts as started: a port already taken fails the start instead of leaving a service
    without metrics.
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)  # anything but /metrics: a 404 with the usual envelope
    app.include_router(metrics_router(before_scrape))
    app.add_middleware(RequestContextMiddleware)  # request ids and access lines, as on the API port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    task.add_done_callback(_log_if_died)
    _log.info("metrics_serving", host=host, port=port)
    try:
        yield
    finally:
        stop.set()
        await task


def _log_if_died(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("metrics_server_died", error=repr(task.exception())[:300])
