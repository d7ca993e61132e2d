"""Last-known-good key records, kept in memory for the fail-open policy.

While Redis answers, every request reads the key's record from Redis (so a
revocation takes effect at once on every replica) and refreshes this cache.
Only while Redis is unreachable, and only under ``redis_failure_policy=open``,
does the gateway admit a key from here, and only if its record was read from
Redis within the last ``ttl_s`` seconds. A key never seen in that window is
refused: the gateway cannot tell a real key from a made-up one without Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from services.gateway.keys import StoredKey

# Bounds memory if a flood of distinct valid keys passes through one replica.
_MAX_ENTRIES = 100_000


class KeyCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredKey]] = OrderedDict()

    def remember(self, stored: StoredKey) -> None:
        key_id = stored.key.key_id
        if stored.key.revoked:
            self.forget(key_id)
            return
        self._entries[key_id] = (self._clock(), stored)
        self._entries.move_to_end(key_id)
        while len(self._entries) > _MAX_ENTRIES:
            self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def last_seen(self, key_id: str) -> StoredKey | None:
        """The key's last record read from Redis, however old: a hint, never an admission."""
        entry = self._entries.get(key_id)
        return None if entry is None else entry[1]

    def recent(self, key_id: str) -> StoredKey | None:
        """The key's record if Redis gave it within the last ``ttl_s`` seconds."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        seen_at, stored = entry
        if self._clock() - seen_at > self._ttl_s:
            self.forget(key_id)
            return None
        return stored
