"""A request's key record, rate-limit window and token counter, in one Redis round trip.

slowapi reads its window through a synchronous Redis client, which blocks the event loop
for a round trip on every request, and the key's record and token counter took two more.
Here one asynchronous script reads the record, counts the request in the key's moving
window and reads the day's token counter. The window's result goes to slowapi's storage
(``window_storage.read_ahead``), so slowapi still decides and sets the headers, without a
round trip of its own. The window key is the one slowapi builds, so every route, with or
without this script, counts in the same window per key.

Counting needs the key's rate limit before its record is read. It comes from the last
record this replica read for the key (a key's limit never changes), and only after the
presented secret matched that record and the record has the route's scope (``Gatekeeper``),
so a wrong secret never spends a real key's window and a refused request is not counted.
A key this replica has not seen yet is read alone first (``KeyStore.lookup``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slowapi import Limiter

from services.gateway.keys import ApiKey, StoredKey, decode_record, record_key
from services.gateway.quota import counter_key
from services.gateway.window_storage import WINDOW_FUNCTION, limit_item, read_ahead

# KEYS[1]: the key's record; KEYS[2]: its window list; KEYS[3] (if the key has a quota): the
# day's token counter. ARGV: now, limit, expiry. A missing record counts nothing.
ADMIT_SCRIPT = (
    WINDOW_FUNCTION
    + """
local now = tonumber(ARGV[1])
local record = redis.call('get', KEYS[1])
local window = {0, tostring(now), 0}
if record then
    window = acquire_and_read(KEYS[2], now, tonumber(ARGV[2]), tonumber(ARGV[3]), 1)
end
local tokens = false
if KEYS[3] then
    tokens = redis.call('get', KEYS[3]) or '0'
end
return {record, window[1], window[2], window[3], tokens}
"""
).encode()

# Runs ADMIT_SCRIPT with (KEYS, ARGV): a LuaChannel, or redis-py's registered script.
ScriptRunner = Callable[[list[str], list[Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Admitted:
    stored: StoredKey | None  # the record as Redis has it now (None: no such key)
    tokens_used: int | None  # today's tokens, when the key had a quota


class Admission:
    def __init__(
        self, script: ScriptRunner, limiter: Limiter, identifiers: Callable[[str], list[str]]
    ) -> None:
        self._script = script
        self._storage = limiter.limiter.storage
        self._identifiers = identifiers  # key_id -> what slowapi names the key's window by

    async def admit(self, known: ApiKey) -> Admitted:
        """Reads ``known``'s record and counts this request in its window (under its known limit)."""
        now = time.time()
        item = limit_item(known.rate_limit)
        window = item.key_for(*self._identifiers(known.key_id))
        keys = [record_key(known.key_id), self._storage.prefixed_key(window)]  # type: ignore[attr-defined]
        if known.daily_token_quota is not None:
            keys.append(counter_key(known.key_id, now))
        expiry = item.get_expiry()
        record, acquired, start, count, tokens = await self._script(keys, [now, item.amount, expiry])
        if record is None:
            return Admitted(None, None)
        read_ahead(window, item.amount, expiry, (bool(acquired), float(start), int(count)))
        return Admitted(decode_record(record), None if tokens is None else int(tokens))
