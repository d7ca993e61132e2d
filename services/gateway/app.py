"""App factory for the gateway: one FastAPI app, every request through one middleware stack."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.types import Scope

from services.common.errors import error_response
from services.common.health import ReadinessCheck
from services.common.wiring import wire_service
from services.console.config import ConsoleSettings
from services.console.mount import mount_console
from services.gateway.auth import Gatekeeper
from services.gateway.body_limit import BodyLimitMiddleware
from services.gateway.config import GatewaySettings
from services.gateway.key_cache import KeyCache
from services.gateway.keys import KeyStore
from services.gateway.openapi import install_openapi
from services.gateway.proxy import Upstream
from services.gateway.quota import Metering, TokenQuota
from services.gateway.ratelimit import RateLimits, redis_options
from services.gateway.routes import build_router
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable
from services.gateway.suite_status import StatusBoard

_UPLOAD_PATH = re.compile(r"^/v1/collections/[^/]+/documents$")
_REDIS_TIMEOUT_S = 1.0


async def _store_down(_: Request, __: Exception) -> JSONResponse:
    return error_response(
        503,
        "auth_unavailable",
        "key and rate-limit store is unavailable; retry shortly",
        {"retry-after": "1"},
    )


def create_app(settings: GatewaySettings | None = None, console: ConsoleSettings | None = None) -> FastAPI:
    """The gateway's FastAPI app (an ASGI factory: Granian calls it with no arguments)."""
    settings = settings or GatewaySettings()
    fail_open = settings.redis_failure_policy == "open"
    redis = aioredis.Redis.from_url(settings.redis_url, **redis_options(_REDIS_TIMEOUT_S, asyncio=True))  # type: ignore[arg-type]
    breaker = StoreBreaker(settings.redis_retry_s, fail_open=fail_open)
    key_store = KeyStore(redis)
    timeouts = {"read_timeout_s": settings.upstream_timeout_s, "deadline_s": settings.request_timeout_s}
    rag = Upstream("rag", settings.rag_url, **timeouts)
    ingest = Upstream("ingest", settings.ingest_url, **timeouts)

    async def redis_ready() -> None:
        await redis.ping()

    status_board = StatusBoard(
        {
            "rag": settings.rag_url,
            "ingest": settings.ingest_url,
            "embedder": settings.embedder_url,
            "llm": settings.llm_url,
        },
        redis_ready,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with rag.client, ingest.client, status_board.client, redis:
            yield

    app = FastAPI(title="Quarry gateway", lifespan=lifespan)
    app.state.rate_limits = RateLimits(settings.redis_url, breaker, timeout_s=_REDIS_TIMEOUT_S)
    app.state.key_store = key_store
    app.state.gatekeeper = Gatekeeper(key_store, KeyCache(settings.key_cache_ttl_s), breaker)
    app.state.metering = Metering(TokenQuota(redis), breaker, settings.query_token_reservation)
    app.state.rag = rag
    app.state.ingest = ingest
    app.state.status_board = status_board
    app.include_router(build_router())
    # Its own package: pages on the public API above, apart from the proxy's routes.
    mount_console(app, redis, console)
    install_openapi(app)

    # Fail-open serves without Redis, so Redis down must not take this replica out of rotation.
    readiness: dict[str, ReadinessCheck] = {"rag": rag.ready}
    if not fail_open:
        readiness["redis"] = redis_ready

    def body_limit(scope: Scope) -> int:
        upload = scope["method"] == "POST" and _UPLOAD_PATH.match(scope["path"])
        return settings.max_upload_bytes if upload else settings.max_body_bytes

    # Added before wire_service so the request-id middleware wraps it: a rejected
    # body still gets an id in its error.
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    wire_service(app, service="gateway", settings=settings, readiness=readiness)
    if settings.cors_origins:
        # Outermost, so preflights and error answers alike carry the CORS headers.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id", "traceparent"],
            expose_headers=[
                "x-request-id",
                "retry-after",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "x-tokenquota-limit",
                "x-tokenquota-remaining",
                "x-quarry-degraded",
            ],
        )
    app.add_exception_handler(RedisError, _store_down)
    app.add_exception_handler(StoreUnavailable, _store_down)
    return app
