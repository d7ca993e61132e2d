"""The largest ``max_tokens`` a query may ask for: one limit, the LLM's own.

rag reads the LLM's cap from its ``/v1/models`` card (re-read now and then: the LLM may be
redeployed with another), and a setting may lower it. A query over it is refused before any
work is done, naming the limit, instead of being refused by the LLM after retrieval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.common.errors import APIError
from services.common.logs import get_logger
from services.rag.answer.llm_client import GenerationUnavailable

_log = get_logger(__name__)
# How long a read cap is trusted, and how long to wait after a failed read (a down LLM
# must not be asked on every query).
REFRESH_S = 60.0
RETRY_S = 5.0
# A card read waits this long at most: it is on a query's path.
READ_TIMEOUT_S = 2.0


class TokenLimit:
    def __init__(self, read_cap: Callable[[], Awaitable[int | None]], configured: int | None) -> None:
        self._read_cap = read_cap
        self._configured = configured
        self._cap: int | None = None
        self._next_read = 0.0
        self._unread = False  # the last read failed (logged once, not on every retry)
        self._lock = asyncio.Lock()

    async def current(self) -> int | None:
        """The limit (None: unknown, the LLM not read yet and no setting)."""
        if time.monotonic() >= self._next_read:
            async with self._lock:
                if time.monotonic() >= self._next_read:  # another query may have read it meanwhile
                    await self._refresh()
        caps = [c for c in (self._cap, self._configured) if c is not None]
        return min(caps) if caps else None

    async def _refresh(self) -> None:
        try:
            self._cap = await self._read_cap()
            self._next_read = time.monotonic() + REFRESH_S
            self._unread = False
        except GenerationUnavailable as exc:
            # The last known cap stands; without one, the LLM refuses what is over its own.
            if not self._unread:
                _log.warning("llm_cap_unread", error=str(exc))
            self._unread = True
            self._next_read = time.monotonic() + RETRY_S

    async def check(self, max_tokens: int | None) -> int | None:
        """The limit, once ``max_tokens`` is known to be within it; 422 naming it otherwise."""
        limit = await self.current()
        if max_tokens is not None and limit is not None and max_tokens > limit:
            raise APIError(
                422,
                "max_tokens_too_large",
                f"max_tokens {max_tokens} is over the limit of {limit}",
            )
        return limit
