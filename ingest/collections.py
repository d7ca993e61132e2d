"""Per-collection ingest settings (chunk size and overlap), kept in Redis beside the generation."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from services.common.vector_schema import COLLECTION_NAME_PATTERN

_NAME_RE = re.compile(COLLECTION_NAME_PATTERN)


def valid_collection_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def _key(collection: str) -> str:
    return f"quarry:ingest:collection:{collection}"


@dataclass(frozen=True)
class CollectionConfig:
    chunk_tokens: int
    chunk_overlap_tokens: int


class CollectionConfigs:
    def __init__(self, redis: Any, default: CollectionConfig) -> None:
        self._redis = redis
        self._default = default

    async def get(self, collection: str) -> CollectionConfig:
        raw = await self._redis.hgetall(_key(collection))
        if not raw:
            return self._default
        values = {k.decode(): int(v) for k, v in raw.items()}
        return CollectionConfig(values["chunk_tokens"], values["chunk_overlap_tokens"])

    async def set(self, collection: str, config: CollectionConfig) -> None:
        await self._redis.hset(_key(collection), mapping=asdict(config))

    async def remove(self, collection: str) -> None:
        await self._redis.delete(_key(collection))
