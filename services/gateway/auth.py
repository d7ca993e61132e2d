"""Bearer-key authentication and scope checks, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import Request

from services.common.errors import APIError
from services.console.sessions import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, Session, SessionStore
from services.gateway.key_cache import KeyCache
from services.gateway.keys import ApiKey, KeyStore, parse_key
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable

# Read by slowapi's limit provider, which is called without the request.
current_rate_limit: ContextVar[str] = ContextVar("current_rate_limit", default="60/minute")

# What a fail-open request goes without, as sent in X-Quarry-Degraded.
DEGRADED_WITHOUT_REDIS = ("keys_cached", "rate_limit_off", "token_quota_off")

_WWW_AUTHENTICATE = {"www-authenticate": "Bearer"}


def _invalid_key() -> APIError:
    return APIError(401, "invalid_api_key", "API key is invalid or revoked", headers=_WWW_AUTHENTICATE)


def _bearer(request: Request) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 for any other shape."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
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


class Gatekeeper:
    """Finds the key for a presented secret: from Redis, or from the last-known-good cache."""

    def __init__(self, store: KeyStore, cache: KeyCache, breaker: StoreBreaker) -> None:
        self._store = store
        self._cache = cache
        self.breaker = breaker

    async def authenticate(self, presented: str) -> Pass:
        parsed = parse_key(presented)
        if parsed is None:
            raise _invalid_key()
        key_id, secret = parsed
        try:
            stored = await self.breaker.run(lambda: self._store.lookup(key_id))
        except StoreUnavailable:
            # Without Redis an unseen key cannot be told from a made-up one.
            cached = self._cache.recent(key_id) if self.breaker.fail_open else None
            if cached is None:
                raise
            if not cached.matches(secret):
                raise _invalid_key() from None
            return Pass(cached.key, without_redis=True)
        if stored is None or stored.key.revoked:
            self._cache.forget(key_id)
            raise _invalid_key()
        if not stored.matches(secret):
            raise _invalid_key()
        self._cache.remember(stored)
        return Pass(stored.key, without_redis=False)

    async def by_id(self, key_id: str) -> Pass:
        """The key a console session was opened with, if it still stands (not revoked).

        No last-known-good fallback: a session is read from Redis, so it needs Redis anyway.
        """
        stored = await self.breaker.run(lambda: self._store.lookup(key_id))
        if stored is None or stored.key.revoked:
            raise _invalid_key()
        return Pass(stored.key, without_redis=False)


async def session_of(request: Request) -> Session | None:
    """The console session the request's cookie names; None without a cookie or a live session."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    sessions: SessionStore = request.app.state.console_sessions
    breaker: StoreBreaker = request.app.state.gatekeeper.breaker
    return await breaker.run(lambda: sessions.get(session_id))


async def _by_session(request: Request) -> Pass:
    """A console request: its session's key, and the session's CSRF token on any change."""
    session = await session_of(request)
    if session is None:
        raise APIError(401, "session_expired", "the console session has ended: sign in again")
    if request.method not in SAFE_METHODS and not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise APIError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header for this session")
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    return await gatekeeper.by_id(session.key_id)


async def admit(request: Request, scope: str, *alternatives: str) -> ApiKey:
    """The request's key, if it has ``scope`` (or one of ``alternatives``); what it was admitted
    with goes to ``request.state``."""
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    # A bearer key wins; without one, a console session cookie may stand in for it.
    console_on = request.app.state.console_sessions is not None
    if console_on and "authorization" not in request.headers and SESSION_COOKIE in request.cookies:
        admitted = await _by_session(request)
    else:
        admitted = await gatekeeper.authenticate(_bearer(request))
    key = admitted.key
    wanted = (scope, *alternatives)
    if key.scopes.isdisjoint(wanted):
        names = " or ".join(repr(s) for s in wanted)
        raise APIError(403, "insufficient_scope", f"this key lacks the {names} scope")
    request.state.api_key = key
    request.state.degraded = list(DEGRADED_WITHOUT_REDIS) if admitted.without_redis else []
    current_rate_limit.set(key.rate_limit)
    return key


def require_scope(scope: str, *alternatives: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency: the request's key, if it has ``scope`` or one of ``alternatives``."""

    async def dependency(request: Request) -> ApiKey:
        return await admit(request, scope, *alternatives)

    return dependency


def check_collection(key: ApiKey, collection: str) -> None:
    if not key.may_use(collection):
        raise APIError(403, "collection_forbidden", f"this key may not use collection {collection!r}")
