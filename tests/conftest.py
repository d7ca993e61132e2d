"""Shared fixtures: a real suite of service processes, a real Milvus Lite server, the real Redis.

The suite starts once per test session on free ports with its own data folder;
tests that need isolation use their own collection names.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Ports, Suite
from services.common.milvus_connect import connect_milvus
from services.gateway.keys import KeyStore

KeyFactory = Callable[..., Awaitable[str]]

# Tests use their own Redis database so they never touch a developer's data.
TEST_REDIS_URL = os.environ.get("QUARRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - environment problem
        pytest.exit(f"Redis is required at {TEST_REDIS_URL}: {exc}", returncode=3)
    # The database is the tests' own: start each session without an earlier run's cache and keys.
    client.flushdb()
    client.close()
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Suite]:
    """The whole suite: Milvus Lite, embedder, llm, rag, gateway as real processes."""
    data_dir = tmp_path_factory.mktemp("suite")
    # Generous generation deadlines: CI machines are small and shared, and an answer that times
    # out degrades to an extractive one, which tests of the normal path must not see.
    slow_machine = {"QUARRY_RAG_LLM_TIMEOUT_S": "300", "QUARRY_GATEWAY_REQUEST_TIMEOUT_S": "300"}
    s = Suite(data_dir=data_dir, redis_url=redis_url, ports=Ports.free(), extra_env=slow_machine)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def collection_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def milvus(suite: Suite, collection_name: str) -> Iterator[Any]:
    """A Milvus client; this test's collection is dropped after it."""
    client = connect_milvus(suite.milvus_uri)
    yield client
    if client.has_collection(collection_name):
        client.drop_collection(collection_name)
    client.close()


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "examples" / "docs"


@pytest.fixture(scope="session")
def ingest_settings(suite: Suite) -> IngestSettings:
    return IngestSettings(
        milvus_uri=suite.milvus_uri,
        redis_url=suite.redis_url,
        embedder_url=suite.url("embedder"),
        lexical_index=str(suite.lexical_index),
    )


@pytest.fixture
async def examples(examples_dir: Path, collection_name: str, ingest_settings: IngestSettings) -> str:
    """examples/docs ingested into this test's own collection; its name."""
    report = await ingest_path(examples_dir, collection_name, ingest_settings)
    assert report.failed == 0
    return collection_name


@pytest.fixture
async def make_key(redis_url: str) -> AsyncIterator[KeyFactory]:
    """Creates real API keys in the test Redis; returns the secret."""
    client = aioredis.Redis.from_url(redis_url)
    store = KeyStore(client)

    async def factory(
        scopes: set[str] | None = None, collections: set[str] | None = None, rate_limit: str = "1000/minute"
    ) -> str:
        secret, _ = await store.create("test", scopes or {"query"}, collections, rate_limit)
        return secret

    yield factory
    await client.aclose()
