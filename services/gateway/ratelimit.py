"""Per-key rate limits: slowapi's shared limit, one moving window per key in Redis.

slowapi decides and writes the ``X-RateLimit-*`` headers, but it checks synchronously
over limits' blocking Redis client. So its decorated check runs in Starlette's thread
pool: a slow or hung Redis holds a worker thread for at most its timeout, never the
event loop, and the Redis breaker skips it after a failure.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from limits import RateLimitItem
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.concurrency import run_in_threadpool

from services.common.errors import APIError
from services.gateway.auth import admit, current_rate_limit
from services.gateway.keys import ApiKey
from services.gateway.store_breaker import StoreBreaker

# One limit per key across every route: the scope names the shared window.
SHARED_SCOPE = "key"
RATE_LIMIT_OFF = "rate_limit_off"


def _limit_key(request: Request) -> str:
    return f"key:{request.state.api_key.key_id}"


def per_key_limit() -> str:
    return current_rate_limit.get()


def redis_options(timeout_s: float, *, asyncio: bool = False) -> dict[str, object]:
    """Short timeouts and one immediate retry (a pooled connection may predate a Redis restart).

    redis-py's default retries back off for seconds, which would hold every request.
    """
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": AsyncRetry(NoBackoff(), 1) if asyncio else Retry(NoBackoff(), 1),
    }


def _counted(request: Request, response: Response) -> None:
    """slowapi counts the request before this and writes its headers into ``response`` after."""


class RateLimits:
    def __init__(self, redis_url: str, breaker: StoreBreaker, *, timeout_s: float = 1.0) -> None:
        self.limiter = Limiter(
            key_func=_limit_key,
            storage_uri=redis_url,
            storage_options=redis_options(timeout_s),  # type: ignore[arg-type]  # slowapi types it as str
            strategy="moving-window",
            headers_enabled=True,
            key_prefix="quarry:ratelimit",
        )
        self._check = self.limiter.shared_limit(per_key_limit, scope=SHARED_SCOPE)(_counted)
        self._breaker = breaker

    async def count(self, request: Request, response: Response) -> None:
        """Counts the request in its key's window; the headers go into ``response``, 429 past it."""
        # slowapi reads this after a storage error; None means "no headers".
        request.state.view_rate_limit = None
        await self._breaker.run_unless_off(
            lambda: run_in_threadpool(self._check_in_thread, request, response),
            request.state.degraded,
            RATE_LIMIT_OFF,
        )

    def _check_in_thread(self, request: Request, response: Response) -> None:
        try:
            self._check(request=request, response=response)
        except RateLimitExceeded as exc:
            raise self._too_many_requests(str(exc.detail), request.state.view_rate_limit) from None

    def _too_many_requests(self, detail: str, view: tuple[RateLimitItem, list[str]]) -> APIError:
        """The 429, with the headers slowapi writes on an admitted request."""
        item, identifiers = view
        stats = self.limiter.limiter.get_window_stats(item, *identifiers)
        reset = 1 + stats.reset_time
        headers = {
            "x-ratelimit-limit": str(item.amount),
            "x-ratelimit-remaining": str(stats.remaining),
            "x-ratelimit-reset": str(reset),
            # Never 0 or less: clients would spin.
            "retry-after": str(max(1, int(reset - time.time()))),
        }
        return APIError(429, "rate_limited", f"rate limit exceeded: {detail}", headers)


def limited(scope: str, *alternatives: str) -> Callable[[Request, Response], Awaitable[ApiKey]]:
    """A dependency: the request's key, admitted for ``scope`` (or one of ``alternatives``) and
    counted in its window."""

    async def dependency(request: Request, response: Response) -> ApiKey:
        key = await admit(request, scope, *alternatives)
        limits: RateLimits = request.app.state.rate_limits
        await limits.count(request, response)
        return key

    return dependency
