"""Daily token quotas per key: a counter per key and UTC day in Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.common.errors import APIError
from services.common.logs import get_logger
from services.gateway.keys import ApiKey
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable

_log = get_logger(__name__)
# A day's counter outlives its day a little, so a late write never resets it.
_COUNTER_TTL_S = 2 * 86_400
QUOTA_OFF = "token_quota_off"


def counter_key(key_id: str, now: float) -> str:
    day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
    return f"quarry:tokens:{key_id}:{day}"


def seconds_until_reset(now: float) -> int:
    """Seconds until the next UTC midnight, at least 1 (a Retry-After of 0 makes clients spin)."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((today + timedelta(days=1)).timestamp() - now))


class TokenQuota:
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def used(self, key_id: str, now: float | None = None) -> int:
        raw = await self._redis.get(counter_key(key_id, time.time() if now is None else now))
        return int(raw or 0)

    async def add(self, key_id: str, tokens: int, now: float | None = None) -> int:
        """Adds ``tokens`` to the count of the day of ``now`` (default: today); returns its total."""
        name = counter_key(key_id, time.time() if now is None else now)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incrby(name, tokens)
            pipe.expire(name, _COUNTER_TTL_S)
            total, _ = await pipe.execute()
        return int(total)


class Metering:
    """Daily token quotas for queries: a query holds a reservation, its answer settles it.

    A query reserves ``reservation`` tokens of its key's day before it is forwarded; its answer
    (a JSON body, or a stream's ``done`` event) settles the reservation to the tokens rag
    reports, handing the rest back. An error answer hands it all back. A query whose client
    leaves first, or a stream that ends without ``done``, keeps it: what was spent is unknown,
    and the reservation is an upper bound of it.

    Why a reservation rather than counting tokens as they stream: rag sends verified sentences,
    not model tokens, and learns the model's count only at the end, so the gateway has nothing
    to count mid-stream; and a client can leave before the first event, with the prompt already
    read. Reserving first needs no change to rag's events and covers every way to leave.
    Concurrent queries of one key see each other's reservations, so they cannot together spend
    past the quota by more than what was left.
    """

    def __init__(self, quota: TokenQuota, breaker: StoreBreaker, reservation: int) -> None:
        self._quota = quota
        self._breaker = breaker
        self._reservation = reservation

    async def reserve(self, key: ApiKey, degraded: list[str]) -> Reservation:
        """Holds this query's reservation; 429 when the key's day has no tokens left."""
        now = time.time()
        limit = key.daily_token_quota
        if limit is None:
            return Reservation(self, key, now)
        held = self._reservation
        total = await self._breaker.run_unless_off(
            lambda: self._quota.add(key.key_id, held, now), degraded, QUOTA_OFF
        )
        if total is None:
            return Reservation(self, key, now)
        used = total - held
        if used >= limit:
            await self.adjust(key, -held, now)  # a refused query spends nothing
            raise APIError(
                429,
                "token_quota_exceeded",
                f"daily token quota of {limit} is spent; it resets at 00:00 UTC",
                headers={
                    "retry-after": str(seconds_until_reset(now)),
                    "x-tokenquota-limit": str(limit),
                    "x-tokenquota-remaining": "0",
                },
            )
        return Reservation(self, key, now, held=held, left=limit - used)

    async def adjust(self, key: ApiKey, tokens: int, now: float) -> None:
        """Adds ``tokens`` (negative: hands them back) to the key's count of the day of ``now``."""
        if tokens == 0:
            return
        try:
            await self._breaker.run(lambda: self._quota.add(key.key_id, tokens, now))
        except StoreUnavailable:
            # The answer is already out; losing its count is the lesser harm.
            _log.warning("token_usage_not_recorded", key_id=key.key_id, tokens=tokens)


@dataclass
class Reservation:
    """The tokens one query holds; ``left`` is what the key had before it (None: no quota)."""

    metering: Metering
    key: ApiKey
    at: float  # settled on the day it was taken, even past midnight
    held: int = 0
    left: int | None = None
    settled: bool = False

    async def settle(self, spent: int) -> None:
        """Counts what the answer spent instead of the reservation (once)."""
        if not self.settled:
            self.settled = True
            await self.metering.adjust(self.key, max(0, spent) - self.held, self.at)
