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
from collections.abc import Callable

from cachetools import TTLCache

from services.gateway.keys import StoredKey

# Bounds memory if a flood of distinct valid keys passes through one replica: past it the
# least recently used record goes first.
MAX_KEYS = 100_000


class KeyCache:
    def __init__(
        self, ttl_s: float, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        self._entries: TTLCache[str, StoredKey] = TTLCache(maxsize=max_keys, ttl=ttl_s, timer=clock)

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, stored: StoredKey) -> None:
        if stored.key.revoked:
            self.forget(stored.key.key_id)
        else:
            self._entries[stored.key.key_id] = stored

    def forget(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def recent(self, key_id: str) -> StoredKey | None:
        """The key's record if Redis gave it within the last ``ttl_s`` seconds."""
        return self._entries.get(key_id)
