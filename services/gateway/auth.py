"""Bearer-key authentication and scope checks, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import Request

from services.common.errors import APIError
from services.gateway.admission import Admission
from services.gateway.key_cache import KeyCache
from services.gateway.keys import ApiKey, KeyStore, StoredKey, parse_key
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable

# Read by the rate limiter, which calls its limit provider and filters without the request.
current_rate_limit: ContextVar[str] = ContextVar("current_rate_limit", default="60/minute")
skip_rate_limit: ContextVar[bool] = ContextVar("skip_rate_limit", default=False)

# What a fail-open request goes without, as sent in X-Quarry-Degraded.
DEGRADED_WITHOUT_REDIS = ("keys_cached", "rate_limit_off", "token_quota_off")

_WWW_AUTHENTICATE = {"www-authenticate": "Bearer"}


def _invalid_key() -> APIError:
    return APIError(401, "invalid_api_key", "API key is invalid or revoked", headers=_WWW_AUTHENTICATE)


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for any other shape."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _bearer(request: Request) -> str:
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None:
        raise APIError(
            401,
            "unauthorized",
            "missing API key: send Authorization: Bearer qk_...",
            headers=_WWW_AUTHENTICATE,
        )
    return token


@dataclass(frozen=True)
class Pass:
    key: ApiKey
    without_redis: bool  # admitted from the last-known-good cache (fail-open)
    tokens_used: int | None = None  # today's tokens, when read on the way in


class Gatekeeper:
    """Finds the key for a presented secret: from Redis, or from the last-known-good cache."""

    def __init__(
        self, store: KeyStore, cache: KeyCache, breaker: StoreBreaker, admission: Admission | None = None
    ) -> None:
        self._store = store
        self._cache = cache
        self._breaker = breaker
        self._admission = admission  # None: slowapi counts on its own (sentinel, cluster)

    def _admissible(self, key_id: str, secret: str, scope: str) -> StoredKey | None:
        """The replica's last record of the key, if one trip may admit it (see admission.py).

        None reads the record alone first: a wrong secret never spends the key's window, and
        a request about to be refused its scope is not counted (slowapi never counts it either).
        """
        if self._admission is None:
            return None
        known = self._cache.last_seen(key_id)
        if known is None or scope not in known.key.scopes or not known.matches(secret):
            return None
        return known

    def recognised(self, presented: str, scope: str) -> ApiKey | None:
        """The key ``authenticate`` would admit ``presented`` as in one trip, counting its window
        (as this replica last saw it); None if it would read the record alone first."""
        parsed = parse_key(presented)
        known = None if parsed is None else self._admissible(*parsed, scope)
        return None if known is None else known.key

    async def authenticate(self, presented: str, scope: str) -> Pass:
        """The key for ``presented``; its window is counted on the way in only if it has ``scope``."""
        parsed = parse_key(presented)
        if parsed is None:
            raise _invalid_key()
        key_id, secret = parsed
        admission = self._admission
        known = self._admissible(key_id, secret, scope)
        tokens_used = None
        try:
            if known is None or admission is None:
                stored = await self._breaker.run(lambda: self._store.lookup(key_id))
            else:
                admitted = await self._breaker.run(lambda: admission.admit(known.key))
                stored, tokens_used = admitted.stored, admitted.tokens_used
        except StoreUnavailable:
            if not self._breaker.fail_open:
                raise
            cached = self._cache.recent(key_id)
            if cached is None:
                # Without Redis an unseen key cannot be told from a made-up one.
                raise
            if not cached.matches(secret):
                raise _invalid_key() from None
            return Pass(cached.key, without_redis=True)
        if stored is None or stored.key.revoked:
            self._cache.forget(key_id)
            raise _invalid_key()
        # The secret matched ``known`` already; a new salt or hash is checked afresh.
        unchanged = known is not None and (known.salt, known.digest) == (stored.salt, stored.digest)
        if not unchanged and not stored.matches(secret):
            raise _invalid_key()
        self._cache.remember(stored)
        return Pass(stored.key, without_redis=False, tokens_used=tokens_used)


def require_scope(scope: str) -> Callable[[Request], Awaitable[ApiKey]]:
    async def dependency(request: Request) -> ApiKey:
        gatekeeper: Gatekeeper = request.app.state.gatekeeper
        admitted = await gatekeeper.authenticate(_bearer(request), scope)
        key, without_redis = admitted.key, admitted.without_redis
        if scope not in key.scopes:
            raise APIError(403, "insufficient_scope", f"this key lacks the {scope!r} scope")
        request.state.api_key = key
        request.state.tokens_used = admitted.tokens_used
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
