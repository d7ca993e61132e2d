"""Daily token quotas per key: a counter per key and UTC day in Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from services.common.errors import APIError
from services.common.logs import get_logger
from services.gateway.keys import ApiKey
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable

_log = get_logger(__name__)
# A day's counter outlives its day a little, so a late write never resets it.
_COUNTER_TTL_S = 2 * 86_400


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
        """Adds what an answer spent; returns the day's total."""
        name = counter_key(key_id, time.time() if now is None else now)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incrby(name, tokens)
            pipe.expire(name, _COUNTER_TTL_S)
            total, _ = await pipe.execute()
        return int(total)


class Metering:
    """Checks a key's daily token quota before a query and adds what the answer spent after."""

    def __init__(self, quota: TokenQuota, breaker: StoreBreaker) -> None:
        self._quota = quota
        self._breaker = breaker

    async def remaining(self, key: ApiKey, degraded: list[str]) -> int | None:
        """Tokens left today (None: no quota, or not checked); 429 when none are left."""
        limit = key.daily_token_quota
        if limit is None or "token_quota_off" in degraded:
            return None
        try:
            used = await self._breaker.run(lambda: self._quota.used(key.key_id))
        except StoreUnavailable:
            if not self._breaker.fail_open:
                raise
            degraded.append("token_quota_off")
            return None
        if used >= limit:
            now = time.time()
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
        return limit - used

    async def record(self, key: ApiKey, tokens: int) -> None:
        if tokens <= 0:
            return
        try:
            await self._breaker.run(lambda: self._quota.add(key.key_id, tokens))
        except StoreUnavailable:
            # The answer is already out; losing its count is the lesser harm.
            _log.warning("token_usage_not_recorded", key_id=key.key_id, tokens=tokens)
