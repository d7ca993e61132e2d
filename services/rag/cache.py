"""Answer cache in Redis, keyed so it can never serve an answer built on an older corpus."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from services.common.corpus_generation import current_generation


class CacheUnavailable(Exception):
    pass


def normalise_question(question: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", question).casefold().split())


class AnswerCache:
    def __init__(self, redis: Any, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def key(self, question: str, collection: str, settings: dict[str, Any]) -> str:
        """Includes the collection's generation: any ingest or delete makes old keys unreachable."""
        try:
            generation = await current_generation(self._redis, collection)
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc
        material = json.dumps(
            [normalise_question(question), collection, generation, settings], sort_keys=True
        )
        return "quarry:answer:" + hashlib.sha256(material.encode()).hexdigest()

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(key)
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc
        return json.loads(raw) if raw else None

    async def put(self, key: str, value: dict[str, Any]) -> None:
        try:
            await self._redis.set(key, json.dumps(value), ex=self._ttl_s)
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc
