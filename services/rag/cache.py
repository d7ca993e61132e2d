"""Answer cache in Redis that can never serve an answer built on an older corpus.

Each entry records the collection's generation number it was built on, and a lookup reads
that number and the entry in one round trip: an entry is served only while its number is
still the collection's (any ingest or delete bumps it), and is overwritten by the next
answer otherwise.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from services.common.corpus_generation import generation_key

_GENERATION = "_generation"


class CacheUnavailable(Exception):
    pass


def normalise_question(question: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", question).casefold().split())


@dataclass(frozen=True)
class Lookup:
    key: str
    generation: int  # the collection's, read with the entry: what a new answer is stored under
    value: dict[str, Any] | None  # the entry, if built on that generation


class AnswerCache:
    def __init__(self, redis: Any, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @staticmethod
    def key(question: str, collection: str, settings: dict[str, Any]) -> str:
        material = json.dumps([normalise_question(question), collection, settings], sort_keys=True)
        return "quarry:answer:" + hashlib.sha256(material.encode()).hexdigest()

    async def lookup(self, question: str, collection: str, settings: dict[str, Any]) -> Lookup:
        key = self.key(question, collection, settings)
        try:
            # Not a transaction: a bump landing between the two reads is the same race as one
            # landing just after the lookup, which the stored number settles on the next one.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(generation_key(collection))
                pipe.get(key)
                generation_raw, raw = await pipe.execute()
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc
        generation = int(generation_raw or 0)
        value = json.loads(raw) if raw else None
        if value is not None and value.pop(_GENERATION, None) != generation:
            value = None  # built on an older corpus (or by an older release): never served
        return Lookup(key, generation, value)

    async def put(self, key: str, generation: int, value: dict[str, Any]) -> None:
        try:
            await self._redis.set(key, json.dumps({**value, _GENERATION: generation}), ex=self._ttl_s)
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc
