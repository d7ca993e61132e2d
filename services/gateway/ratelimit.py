"""Per-key rate limits with slowapi on Redis (moving window)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, Response
from limits import RateLimitItem
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded

from services.common.errors import error_response
from services.gateway.auth import current_rate_limit, skip_rate_limit
from services.gateway.window_storage import one_trip_uri

# One limit per key across every route: the scope names the shared window.
SHARED_SCOPE = "key"


def _limit_key(request: Request) -> str:
    key = getattr(request.state, "api_key", None)
    return _key_window(key.key_id) if key is not None else "anonymous"


def _key_window(key_id: str) -> str:
    return f"key:{key_id}"


def window_identifiers(limiter: Limiter) -> Callable[[str], list[str]]:
    """key_id -> the identifiers slowapi passes limits for that key's shared window."""
    prefix = [limiter._key_prefix] if limiter._key_prefix else []
    return lambda key_id: [*prefix, _key_window(key_id), SHARED_SCOPE]


def per_key_limit() -> str:
    return current_rate_limit.get()


def _skipped() -> bool:
    # Set when the key was admitted without Redis (fail-open): no window to count in.
    return skip_rate_limit.get()


def redis_options(timeout_s: float, *, asyncio: bool = False) -> dict[str, object]:
    """Short timeouts and one immediate retry (a pooled connection may predate a Redis restart).

    redis-py's default retries back off for seconds, which would stall every request.
    """
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": AsyncRetry(NoBackoff(), 1) if asyncio else Retry(NoBackoff(), 1),
    }


def create_limiter(redis_url: str, *, fail_open: bool, timeout_s: float = 1.0) -> Limiter:
    limiter = Limiter(
        key_func=_limit_key,
        storage_uri=one_trip_uri(redis_url),
        storage_options=redis_options(timeout_s),  # type: ignore[arg-type]  # slowapi types it as str
        strategy="moving-window",
        headers_enabled=True,
        swallow_errors=fail_open,
        key_prefix="quarry:ratelimit",
    )
    # slowapi 0.1.10 checks these before counting but has no public way to add one.
    limiter._request_filters.append(_skipped)
    return limiter


def with_limit_headers(
    limiter: Limiter, response: Response, view: tuple[RateLimitItem, list[str]] | None
) -> Response:
    """``X-RateLimit-*`` headers for ``view``'s window, as slowapi writes them."""
    return limiter._inject_headers(response, view)  # type: ignore[arg-type]  # None: no headers


def too_many_requests(
    limiter: Limiter, detail: str, view: tuple[RateLimitItem, list[str]] | None
) -> Response:
    response = with_limit_headers(
        limiter, error_response(429, "rate_limited", f"rate limit exceeded: {detail}"), view
    )
    # slowapi computes seconds until reset; never send 0 or less, clients would spin.
    try:
        retry_after = int(response.headers.get("retry-after", "1"))
    except ValueError:
        retry_after = 1
    response.headers["retry-after"] = str(max(1, retry_after))
    return response


async def rate_limit_exceeded(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimitExceeded)
    return too_many_requests(request.app.state.limiter, str(exc.detail), request.state.view_rate_limit)
