"""Calls to Redis under the gateway's failure policy, behind a purgatory circuit breaker.

One failure opens the breaker for ``retry_s`` seconds: requests then skip Redis at once
instead of each waiting out its timeout. The first call after that tries Redis again
(half-open) and a success closes the breaker, so the gateway recovers by itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from redis.exceptions import RedisError

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

    async def run_unless_off(
        self, operation: Callable[[], Awaitable[T]], degraded: list[str], off: str
    ) -> T | None:
        """``operation``'s result; None once the request goes without it (``off`` in ``degraded``),
        as it does when Redis fails under the fail-open policy."""
        if off in degraded:
            return None
        try:
            return await self.run(operation)
        except StoreUnavailable:
            if not self.fail_open:
                raise
            degraded.append(off)
            return None


def _log_recovery(name: str, kind: str, event: Any) -> None:
    if kind == "state_changed" and event.state == "closed":
        _log.info("redis_recovered")
