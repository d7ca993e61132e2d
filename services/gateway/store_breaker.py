"""Calls to Redis under the gateway's failure policy, behind a purgatory circuit breaker.

One failure opens the breaker for ``retry_s`` seconds: requests then skip Redis at once
instead of each waiting out its timeout. The first call after that tries Redis again
(half-open) and a success closes the breaker, so the gateway recovers by itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.responses import JSONResponse
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from redis.exceptions import RedisError

from services.common.errors import error_response
from services.common.logs import get_logger

T = TypeVar("T")

_log = get_logger(__name__)
_CIRCUIT = "redis"


class StoreUnavailable(Exception):
    """Redis failed or is being skipped; answered 503 unless the policy is fail-open."""


def _not_a_store_failure(exc: BaseException) -> bool:
    # A refusal raised inside a call (a 429, a cancelled request) says nothing of Redis.
    return not isinstance(exc, RedisError)


class StoreBreaker:
    def __init__(self, retry_s: float, *, fail_open: bool) -> None:
        self.fail_open = fail_open
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=1, default_ttl=retry_s, exclude=[(BaseException, _not_a_store_failure)]
        )
        self._breakers.add_listener(_log_recovery)

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            breaker = await self._breakers.get_breaker(_CIRCUIT)
            async with breaker:
                return await operation()
        except OpenedState as exc:
            raise StoreUnavailable from exc
        except RedisError as exc:
            _log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
            raise StoreUnavailable from exc


def _log_recovery(name: str, kind: str, event: Any) -> None:
    if kind == "state_changed" and event.state == "closed":
        _log.info("redis_recovered")


def store_down_response() -> JSONResponse:
    """The 503 for Redis being unavailable."""
    return error_response(
        503,
        "auth_unavailable",
        "key and rate-limit store is unavailable; retry shortly",
        {"retry-after": "1"},
    )
