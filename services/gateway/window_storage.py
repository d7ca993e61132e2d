"""limits' Redis storage for slowapi's moving window, in at most one Redis round trip per request.

slowapi counts a request (``acquire_entry``) and then, for the ``X-RateLimit-*`` headers,
reads the window again (``get_moving_window``): two synchronous round trips on the
event loop per request, the largest cost the gateway had. Here one Lua script does both
and the window it saw is kept for the header read that follows in the same request.
When the gateway's asynchronous admission script has already counted the request
(``read_ahead``), slowapi's acquire takes that result and makes no round trip at all.
Select it with ``one_trip_uri``; everything else is limits' own storage.
"""

from __future__ import annotations

import functools
import time
from contextvars import ContextVar
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import RedisStorage

_PREFIX = "quarry+"

# The moving window as a Lua function: count ``amount`` entries at ``now`` if the window has
# room, then find the start of the window and the entries in it (the list is newest first).
# Returns {acquired 0|1, start of the window, entries in it}, as limits' two scripts would.
WINDOW_FUNCTION = """
local function acquire_and_read(window, now, limit, expiry, amount)
    local acquired = 0
    if amount <= limit then
        local entry = redis.call('lindex', window, limit - amount)
        if not (entry and tonumber(entry) >= now - expiry) then
            local entries = {}
            for i = 1, amount do entries[i] = now end
            for i = 1, #entries, 5000 do
                redis.call('lpush', window, unpack(entries, i, math.min(i + 4999, #entries)))
            end
            redis.call('ltrim', window, 0, limit - 1)
            redis.call('expire', window, expiry)
            acquired = 1
        end
    end
    -- The oldest entry still inside the window, by binary search.
    local low, high = 0, math.min(redis.call('llen', window), limit) - 1
    local found = nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local value = tonumber(redis.call('lindex', window, mid))
        if value and value >= now - expiry then
            found = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    if found then
        return {acquired, redis.call('lindex', window, found), found + 1}
    end
    return {acquired, tostring(now), 0}
end
"""

# KEYS[1]: the window list. ARGV: now, limit, expiry, amount.
_ACQUIRE_AND_READ = (
    WINDOW_FUNCTION
    + """
return acquire_and_read(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
"""
)

# (key, limit, expiry) -> (window start, entries) as seen by this request's acquire.
_seen_window: ContextVar[tuple[tuple[str, int, int], tuple[float, int]] | None] = ContextVar(
    "seen_window", default=None
)
# (key, limit, expiry) -> (acquired, window start, entries): an acquire already done in Redis
# by an asynchronous script (see admission.py), for the next acquire_entry to take.
_read_ahead: ContextVar[tuple[tuple[str, int, int], tuple[bool, float, int]] | None] = ContextVar(
    "read_ahead", default=None
)


@functools.lru_cache(maxsize=1024)
def limit_item(rate_limit: str) -> RateLimitItem:
    """A key's limit (``60/minute``) as limits' item, parsed once per distinct string."""
    return parse(rate_limit)


def read_ahead(key: str, limit: int, expiry: int, window: tuple[bool, float, int]) -> None:
    """Hands this request's next ``acquire_entry`` for ``key`` a result counted ahead in Redis."""
    _read_ahead.set(((key, limit, expiry), window))


def one_trip_uri(redis_url: str) -> str:
    """The storage URI for slowapi: this storage for plain Redis, limits' own for the rest
    (sentinel, cluster), whose scripts this one does not replace."""
    if redis_url.startswith(("redis://", "rediss://")):
        return _PREFIX + redis_url
    return redis_url


class OneTripRedisStorage(RedisStorage):
    STORAGE_SCHEME = [f"{_PREFIX}redis", f"{_PREFIX}rediss"]  # noqa: RUF012  (limits' registry reads a list)

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(_PREFIX), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self._acquire_and_read = self.get_connection().register_script(_ACQUIRE_AND_READ.encode())

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        ahead = _read_ahead.get()
        if ahead is not None and ahead[0] == (key, limit, expiry) and amount == 1:
            # Already counted by this request's admission script: no round trip on the loop.
            _read_ahead.set(None)
            acquired, start, count = ahead[1]
        else:
            acquired, start, count = self._acquire_and_read(
                [self.prefixed_key(key)], [time.time(), limit, expiry, amount]
            )
        _seen_window.set(((key, limit, expiry), (float(start), int(count))))
        return bool(acquired)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        seen = _seen_window.get()
        if seen is not None and seen[0] == (key, limit, expiry):
            _seen_window.set(None)
            return seen[1]
        return super().get_moving_window(key, limit, expiry)
