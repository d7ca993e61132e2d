"""App factory for the gateway."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from slowapi.errors import RateLimitExceeded
from starlette.types import Scope

from services.common.health import ReadinessCheck
from services.common.wiring import wire_service
from services.gateway import lua_channel
from services.gateway.admission import ADMIT_SCRIPT, Admission, ScriptRunner
from services.gateway.auth import Gatekeeper
from services.gateway.body_limit import BodyLimitMiddleware
from services.gateway.config import GatewaySettings
from services.gateway.express_lane import ExpressLane
from services.gateway.key_cache import KeyCache
from services.gateway.keys import KeyStore
from services.gateway.lua_channel import LuaChannel
from services.gateway.openapi import install_openapi
from services.gateway.proxy import Upstream
from services.gateway.quota import Metering, TokenQuota
from services.gateway.ratelimit import (
    create_limiter,
    rate_limit_exceeded,
    redis_options,
    window_identifiers,
)
from services.gateway.routes import build_router
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable, store_down_response
from services.gateway.window_storage import OneTripRedisStorage

_UPLOAD_PATH = re.compile(r"^/v1/collections/[^/]+/documents$")
_REDIS_TIMEOUT_S = 1.0


async def _store_down(request: Request, exc: Exception) -> JSONResponse:
    return store_down_response(request.app.state.breaker, exc)


def _cors_options(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST", "DELETE"],
        "allow_headers": ["authorization", "content-type", "x-request-id", "traceparent"],
        "expose_headers": [
            "x-request-id",
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-quarry-degraded",
        ],
    }


def create_server(settings: GatewaySettings | None = None) -> ExpressLane:
    """The gateway as Granian serves it (RSGI): the express lane in front of the app."""
    settings = settings or GatewaySettings()
    app = create_app(settings)
    state = app.state
    cors = CORSMiddleware(app, **_cors_options(settings)) if settings.cors_origins else None
    return ExpressLane(
        app,
        gatekeeper=state.gatekeeper,
        limiter=state.limiter,
        identifiers=window_identifiers(state.limiter),
        breaker=state.breaker,
        metering=state.metering,
        rag=state.rag,
        max_body_bytes=settings.max_body_bytes,
        cors=cors,
    )


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway's FastAPI app: every route, served alone or behind ``create_server``'s lane."""
    settings = settings or GatewaySettings()
    fail_open = settings.redis_failure_policy == "open"
    redis = aioredis.Redis.from_url(settings.redis_url, **redis_options(_REDIS_TIMEOUT_S, asyncio=True))  # type: ignore[arg-type]
    limiter = create_limiter(settings.redis_url, fail_open=fail_open, timeout_s=_REDIS_TIMEOUT_S)
    breaker = StoreBreaker(settings.redis_retry_s, fail_open=fail_open)
    key_store = KeyStore(redis)
    # The admission script runs on every request: over its own lean connection where it can.
    script: ScriptRunner = (
        LuaChannel(settings.redis_url, ADMIT_SCRIPT, timeout_s=_REDIS_TIMEOUT_S)
        if lua_channel.supports(settings.redis_url)
        else redis.register_script(ADMIT_SCRIPT)
    )
    rag = Upstream(
        "rag",
        settings.rag_url,
        read_timeout_s=settings.upstream_timeout_s,
        deadline_s=settings.request_timeout_s,
    )
    ingest = Upstream(
        "ingest",
        settings.ingest_url,
        read_timeout_s=settings.upstream_timeout_s,
        deadline_s=settings.request_timeout_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await rag.aclose()
            await ingest.aclose()
            await redis.aclose()
            if isinstance(script, LuaChannel):
                await script.aclose()

    app = FastAPI(title="Quarry gateway", lifespan=lifespan)
    app.state.limiter = limiter
    app.state.breaker = breaker
    app.state.key_store = key_store
    # One round trip per request where the limiter's storage is ours (plain Redis).
    identifiers = window_identifiers(limiter)
    admission = None
    if isinstance(limiter.limiter.storage, OneTripRedisStorage):
        admission = Admission(script, limiter, identifiers)
    gatekeeper = Gatekeeper(key_store, KeyCache(settings.key_cache_ttl_s), breaker, admission)
    metering = Metering(TokenQuota(redis), breaker)
    app.state.gatekeeper = gatekeeper
    app.state.metering = metering
    app.state.rag = rag
    app.state.ingest = ingest
    app.include_router(build_router(limiter))
    install_openapi(app)

    async def redis_ready() -> None:
        await redis.ping()

    # Fail-open serves without Redis, so Redis down must not take this replica out of rotation.
    readiness: dict[str, ReadinessCheck] = {"rag": rag.ready}
    if not fail_open:
        readiness["redis"] = redis_ready

    def body_limit(scope: Scope) -> int:
        upload = scope["method"] == "POST" and _UPLOAD_PATH.match(scope["path"])
        return settings.max_upload_bytes if upload else settings.max_body_bytes

    # Added before wire_service so the request-id middleware wraps it: a rejected
    # body still gets an id in its error.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, limit_for=body_limit)
    wire_service(app, service="gateway", settings=settings, readiness=readiness)
    if settings.cors_origins:
        # Outermost, so preflights and error answers alike carry the CORS headers.
        app.add_middleware(CORSMiddleware, **_cors_options(settings))
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded)
    app.add_exception_handler(RedisError, _store_down)
    app.add_exception_handler(StoreUnavailable, _store_down)
    return app
