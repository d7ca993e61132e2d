"""The answer cache against the real Redis: one entry per question, served only on its generation."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.common.corpus_generation import bump_generation
from services.rag.cache import AnswerCache

SETTINGS = {"top_k": 3, "prompt": "v1"}


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_an_entry_is_served_only_on_the_generation_it_was_built_on(
    redis_client: aioredis.Redis,
) -> None:
    cache = AnswerCache(redis_client, ttl_s=60)
    collection = f"t_cache_{uuid.uuid4().hex[:8]}"
    first = await cache.lookup("What is  Quarry?", collection, SETTINGS)
    assert first.value is None and first.generation == 0
    await cache.put(first.key, first.generation, {"answer": "a search stack"})

    # Same question after normalisation (case, spaces, NFKC), same settings: a hit.
    hit = await cache.lookup("what is quarry?", collection, SETTINGS)
    assert hit.key == first.key and hit.value == {"answer": "a search stack"}
    assert (await cache.lookup("what is quarry?", collection, {**SETTINGS, "top_k": 4})).value is None

    await bump_generation(redis_client, collection)  # an ingest changed the collection
    stale = await cache.lookup("what is quarry?", collection, SETTINGS)
    assert stale.value is None and stale.generation == 1 and stale.key == first.key
    await cache.put(stale.key, stale.generation, {"answer": "a RAG stack"})
    assert (await cache.lookup("what is quarry?", collection, SETTINGS)).value == {"answer": "a RAG stack"}
    assert await redis_client.ttl(first.key) > 0


async def test_an_answer_built_before_a_bump_is_never_served_after_it(redis_client: aioredis.Redis) -> None:
    """Lookup, then an ingest lands while the answer is generated: the late write is dead on arrival."""
    cache = AnswerCache(redis_client, ttl_s=60)
    collection = f"t_cache_{uuid.uuid4().hex[:8]}"
    before = await cache.lookup("q", collection, SETTINGS)
    await bump_generation(redis_client, collection)
    await cache.put(before.key, before.generation, {"answer": "built on the old corpus"})
    assert (await cache.lookup("q", collection, SETTINGS)).value is None


async def test_an_entry_without_a_generation_is_not_served(redis_client: aioredis.Redis) -> None:
    cache = AnswerCache(redis_client, ttl_s=60)
    collection = f"t_cache_{uuid.uuid4().hex[:8]}"
    key = cache.key("q", collection, SETTINGS)
    await redis_client.set(key, json.dumps({"answer": "written by an older release"}), ex=60)
    assert (await cache.lookup("q", collection, SETTINGS)).value is None
