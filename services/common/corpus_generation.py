"""Per-collection generation numbers in Redis.

Ingest bumps a collection's number on every change; rag stores the number with each
cached answer and serves one only while its number is current, so an answer built on an
older corpus can never be served again.
"""

from __future__ import annotations

from typing import Any


def generation_key(collection: str) -> str:
    return f"quarry:generation:{collection}"


async def current_generation(redis: Any, collection: str) -> int:
    value = await redis.get(generation_key(collection))
    return int(value or 0)


async def bump_generation(redis: Any, collection: str) -> int:
    return int(await redis.incr(generation_key(collection)))
