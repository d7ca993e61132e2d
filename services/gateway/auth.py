"""Bearer-key authentication and scope checks, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from fastapi import Request

from services.common.errors import APIError
from services.gateway.key_cache import KeyCache
from services.gateway.keys import ApiKey, KeyStore, parse_key
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable

# Read by the rate limiter, which calls its limit provider and filters without the request.
current_rate_limit: ContextVar[str] = ContextVar("current_rate_limit", default="60/minute")
skip_rate_limit: ContextVar[bool] = ContextVar("skip_rate_limit", default=False)

# What a fail-open request goes without, as sent in X-Quarry-Degraded.
DEGRADED_WITHOUT_REDIS = ("keys_cached", "rate_limit_off", "token_quota_off")

_WWW_AUTHENTICATE = {"www-authenticate": "Bearer"}


def _invalid_key() -> APIError:
    return APIError(401, "invalid_api_key", "API key is invalid or revoked", headers=_WWW_AUTHENTICATE)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(
            401,
            "unauthorized",
            "missing API key: send Authorization: Bearer qk_...",
            headers=_WWW_AUTHENTICATE,
        )
    return token.strip()


class Gatekeeper:
    """Finds the key for a presented secret: from Redis, or from the last-known-good cache."""

    def __init__(self, store: KeyStore, cache: KeyCache, breaker: StoreBreaker) -> None:
        self._store = store
        self._cache = cache
        self._breaker = breaker

    async def authenticate(self, presented: str) -> tuple[ApiKey, bool]:
        """The key, and whether it was admitted without Redis (fail-open)."""
        parsed = parse_key(presented)
        if parsed is None:
            raise _invalid_key()
        key_id, secret = parsed
        try:
            stored = await self._breaker.run(lambda: self._store.lookup(key_id))
        except StoreUnavailable:
            if not self._breaker.fail_open:
                raise
            cached = self._cache.recent(key_id)
            if cached is None:
                # Without Redis an unseen key cannot be told from a made-up one.
                raise
            if not cached.matches(secret):
                raise _invalid_key() from None
            return cached.key, True
        if stored is None or stored.key.revoked:
            self._cache.forget(key_id)
            raise _invalid_key()
        if not stored.matches(secret):
            raise _invalid_key()
        self._cache.remember(stored)
        return stored.key, False


def require_scope(scope: str) -> Callable[[Request], Awaitable[ApiKey]]:
    async def dependency(request: Request) -> ApiKey:
        gatekeeper: Gatekeeper = request.app.state.gatekeeper
        key, without_redis = await gatekeeper.authenticate(_bearer(request))
        if scope not in key.scopes:
            raise APIError(403, "insufficient_scope", f"this key lacks the {scope!r} scope")
        request.state.api_key = key
        request.state.degraded = list(DEGRADED_WITHOUT_REDIS) if without_redis else []
        # slowapi reads this after a swallowed storage error; None means "no headers".
        request.state.view_rate_limit = None
        current_rate_limit.set(key.rate_limit)
        skip_rate_limit.set(without_redis)
        return key

    return dependency


def check_collection(key: ApiKey, collection: str) -> None:
    if not key.may_use(collection):
        raise APIError(403, "collection_forbidden", f"this key may not use collection {collection!r}")
