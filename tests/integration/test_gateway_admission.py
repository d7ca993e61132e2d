"""The gateway's one-trip admission against the real Redis: a known key costs one asynchronous
EVALSHA (record, window, token counter) and slowapi's synchronous storage makes no call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from limits import parse

from services.common.errors import APIError
from services.gateway.admission import ADMIT_SCRIPT, Admission
from services.gateway.auth import Gatekeeper
from services.gateway.key_cache import KeyCache
from services.gateway.keys import KeyStore
from services.gateway.quota import TokenQuota
from services.gateway.ratelimit import create_limiter, window_identifiers
from services.gateway.store_breaker import StoreBreaker
from tests.integration.test_gateway_window_storage import counting


def _count_async(client: Any) -> list[str]:
    calls: list[str] = []
    inner = client.execute_command

    async def execute_command(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        return await inner(*args, **kwargs)

    client.execute_command = execute_command
    return calls


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[tuple[Gatekeeper, KeyStore, Any, Any]]:
    client = aioredis.Redis.from_url(redis_url)
    limiter = create_limiter(redis_url, fail_open=False)
    store = KeyStore(client)
    admission = Admission(client.register_script(ADMIT_SCRIPT), limiter, window_identifiers(limiter))
    gatekeeper = Gatekeeper(store, KeyCache(60), StoreBreaker(1.0, fail_open=False), admission)
    try:
        yield gatekeeper, store, client, limiter
    finally:
        await client.aclose()


def _hit(limiter: Any, key_id: str, rate_limit: str) -> tuple[bool, int]:
    """What slowapi does after admission: hit the key's window, then read it for the headers."""
    item = parse(rate_limit)
    identifiers = window_identifiers(limiter)(key_id)
    allowed = limiter.limiter.hit(item, *identifiers)
    return allowed, limiter.limiter.get_window_stats(item, *identifiers).remaining


async def test_a_known_key_costs_one_round_trip_and_slowapi_none(rig: Any) -> None:
    gatekeeper, store, client, limiter = rig
    secret, key = await store.create("one-trip", {"query"}, None, "3/minute", daily_token_quota=100)
    await TokenQuota(client).add(key.key_id, 7)
    first = await gatekeeper.authenticate(secret, "query")  # unseen: read alone, counted by slowapi itself
    assert first.tokens_used is None
    assert _hit(limiter, key.key_id, key.rate_limit) == (True, 2)

    calls = _count_async(client)
    sync_calls = counting(limiter.limiter.storage)
    admitted = await gatekeeper.authenticate(secret, "query")
    assert (admitted.key.key_id, admitted.without_redis, admitted.tokens_used) == (key.key_id, False, 7)
    assert _hit(limiter, key.key_id, key.rate_limit) == (True, 1)
    assert calls == ["EVALSHA"]
    assert sync_calls == []  # slowapi took the window the script counted

    await gatekeeper.authenticate(secret, "query")
    assert _hit(limiter, key.key_id, key.rate_limit) == (True, 0)
    await gatekeeper.authenticate(secret, "query")
    assert _hit(limiter, key.key_id, key.rate_limit) == (False, 0)  # the same 3/minute window
    assert sync_calls == []


async def test_a_wrong_secret_for_a_known_key_spends_nothing(rig: Any) -> None:
    gatekeeper, store, client, limiter = rig
    secret, key = await store.create("victim", {"query"}, None, "2/minute")
    await gatekeeper.authenticate(secret, "query")  # now known to this replica
    for _ in range(5):
        with pytest.raises(APIError) as refused:
            await gatekeeper.authenticate(secret[:-4] + "AAAA", "query")
        assert refused.value.status == 401
    assert await client.llen(_window(limiter, key.key_id, key.rate_limit)) == 0


def _window(limiter: Any, key_id: str, rate_limit: str) -> str:
    item = parse(rate_limit)
    return str(limiter.limiter.storage.prefixed_key(item.key_for(*window_identifiers(limiter)(key_id))))


async def test_a_request_refused_its_scope_spends_nothing(rig: Any) -> None:
    gatekeeper, store, client, limiter = rig
    secret, key = await store.create("ingest-only", {"ingest"}, None, "2/minute")
    await gatekeeper.authenticate(secret, "ingest")  # now known to this replica
    for _ in range(3):  # the route answers these 403; none may count
        admitted = await gatekeeper.authenticate(secret, "query")
        assert "query" not in admitted.key.scopes
    assert await client.llen(_window(limiter, key.key_id, key.rate_limit)) == 0
    await gatekeeper.authenticate(secret, "ingest")  # in scope: counted on the way in
    assert await client.llen(_window(limiter, key.key_id, key.rate_limit)) == 1


async def test_a_revoked_known_key_is_refused_at_once(rig: Any) -> None:
    gatekeeper, store, _, _ = rig
    secret, key = await store.create("revoked", {"query"}, None, "100/minute")
    await gatekeeper.authenticate(secret, "query")
    assert await store.revoke(key.key_id)
    with pytest.raises(APIError) as refused:
        await gatekeeper.authenticate(secret, "query")
    assert refused.value.status == 401
