"""Calls to Redis under the gateway's failure policy.

After a failure the gateway skips Redis for ``retry_s`` seconds, so requests stop
paying its timeouts (the rate limiter's client is synchronous: a hung Redis would
otherwise stall the event loop on every request). The first request after that
window tries Redis again, so the gateway recovers by itself once Redis is back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from services.common.errors import error_response
from services.common.logs import get_logger

T = TypeVar("T")

_log = get_logger(__name__)


class StoreUnavailable(Exception):
    """Redis failed or is being skipped; answered 503 unless the policy is fail-open."""


class StoreBreaker:
    def __init__(
        self, retry_s: float, *, fail_open: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fail_open = fail_open
        self._retry_s = retry_s
        self._clock = clock
        self._down_until = 0.0
        self._down = False

    @property
    def available(self) -> bool:
        return self._clock() >= self._down_until

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self.available:
            raise StoreUnavailable
        try:
            result = await operation()
        except RedisError as exc:
            self.failed(exc)
            raise StoreUnavailable from exc
        self.succeeded()
        return result

    def failed(self, exc: BaseException) -> None:
        if not self._down:
            _log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
        self._down = True
        self._down_until = self._clock() + self._retry_s

    def succeeded(self) -> None:
        if self._down:
            _log.info("redis_recovered")
            self._down = False
            self._down_until = 0.0


def store_down_response(breaker: StoreBreaker, exc: Exception) -> JSONResponse:
    """The 503 for a Redis failure; one raised outside ``breaker.run`` (by the rate limiter's
    own client) is recorded in the breaker first."""
    if isinstance(exc, RedisError):
        breaker.failed(exc)
    return error_response(
        503,
        "auth_unavailable",
        "key and rate-limit store is unavailable; retry shortly",
        {"retry-after": "1"},
    )
