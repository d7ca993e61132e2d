"""Pure logic of the gateway: key shapes, secret checks, bounded caches, the Redis breaker, quotas, usage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx2
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from services.common.errors import APIError
from services.gateway.key_cache import KeyCache
from services.gateway.keys import ApiKey, KeyStore, StoredKey, _digest, parse_key
from services.gateway.proxy import URL_CACHE_SIZE, Upstream
from services.gateway.quota import counter_key, seconds_until_reset
from services.gateway.store_breaker import StoreBreaker, StoreUnavailable
from services.gateway.usage import DoneEvents, tokens_in_body

KEY_ID = "0123456789abcdef"
SECRET = "A" * 43


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stored(secret: str = SECRET, revoked: bool = False, key_id: str = KEY_ID) -> StoredKey:
    key = ApiKey(key_id, "t", frozenset({"query"}), None, "5/minute", revoked=revoked)
    return StoredKey(key, "salt", _digest("salt", secret))


def test_well_formed_key_parses() -> None:
    assert parse_key(f"qk_{KEY_ID}_{SECRET}") == (KEY_ID, SECRET)


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "qk_",
        f"qk_{KEY_ID}",
        f"QK_{KEY_ID}_{SECRET}",
        f"qk_{KEY_ID.upper()}_{SECRET}",
        f"qk_{KEY_ID[:-1]}_{SECRET}",
        f"qk_{KEY_ID}_{SECRET[:-1]}",
        f"qk_{KEY_ID}_{SECRET}A",
        f"qk_{KEY_ID}_{SECRET}\n",
        f"qk_{KEY_ID}_{SECRET}\r\nX-Admin: 1",
        f" qk_{KEY_ID}_{SECRET}",
        f"qk_{KEY_ID}_{'é' * 43}",
        f"qk_{KEY_ID}_{'A' * 42}=",
        f"qk_{KEY_ID}_{SECRET}" * 2,
        "x" * 10_000,
    ],
)
def test_every_wrong_shape_is_refused(presented: str) -> None:
    assert parse_key(presented) is None


def test_secret_is_checked_against_the_salted_hash() -> None:
    stored = _stored()
    assert stored.matches(SECRET)
    assert not stored.matches("B" * 43)
    assert stored.digest != SECRET and SECRET not in stored.digest


@pytest.mark.parametrize(
    ("scopes", "rate_limit", "quota"),
    [
        (set(), "5/minute", None),
        ({"root"}, "5/minute", None),
        ({"query"}, "lots", None),
        ({"query"}, "5/minute", 0),
    ],
)
async def test_invalid_key_settings_are_refused_before_storing(
    scopes: set[str], rate_limit: str, quota: int | None
) -> None:
    with pytest.raises(ValueError):
        await KeyStore(redis=None).create("t", scopes, None, rate_limit, quota)


def test_key_cache_holds_recent_records_by_id() -> None:
    clock = Clock()
    cache = KeyCache(ttl_s=60, clock=clock)
    cache.remember(_stored())
    recent = cache.recent(KEY_ID)
    assert recent is not None and recent.matches(SECRET) and not recent.matches("B" * 43)
    assert cache.recent("f" * 16) is None


def test_key_cache_forgets_after_its_ttl() -> None:
    clock = Clock()
    cache = KeyCache(ttl_s=60, clock=clock)
    cache.remember(_stored())
    clock.now += 61
    assert cache.recent(KEY_ID) is None


def test_key_cache_never_keeps_a_revoked_key() -> None:
    cache = KeyCache(ttl_s=60, clock=Clock())
    cache.remember(_stored())
    cache.remember(_stored(revoked=True))
    assert cache.recent(KEY_ID) is None


def test_key_cache_is_bounded_and_drops_the_least_recently_used_first() -> None:
    cache = KeyCache(ttl_s=60, clock=Clock(), max_keys=3)
    ids = [f"{n:016x}" for n in range(5)]
    for key_id in ids[:3]:
        cache.remember(_stored(key_id=key_id))
    assert cache.recent(ids[0]) is not None  # now the most recently used
    for key_id in ids[3:]:
        cache.remember(_stored(key_id=key_id))
    assert len(cache) == 3
    assert [cache.recent(k) is not None for k in ids] == [True, False, False, True, True]


async def test_breaker_skips_redis_after_a_failure_then_tries_again() -> None:
    breaker = StoreBreaker(retry_s=0.2, fail_open=False)
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise RedisConnectionError("refused")

    async def working() -> int:
        nonlocal calls
        calls += 1
        return 7

    with pytest.raises(StoreUnavailable):
        await breaker.run(failing)
    with pytest.raises(StoreUnavailable):
        await breaker.run(working)  # skipped: Redis just failed
    assert calls == 1
    await asyncio.sleep(0.25)
    assert await breaker.run(working) == 7
    assert await breaker.run(working) == 7
    assert calls == 3


async def test_breaker_counts_only_redis_failures() -> None:
    breaker = StoreBreaker(retry_s=60, fail_open=False)

    async def refused() -> int:
        raise APIError(429, "rate_limited", "over")

    async def working() -> int:
        return 7

    for _ in range(3):
        with pytest.raises(APIError):
            await breaker.run(refused)
    assert await breaker.run(working) == 7


def test_quota_counter_rolls_over_at_utc_midnight() -> None:
    before = datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC).timestamp()
    after = before + 2
    assert counter_key("k", before) != counter_key("k", after)
    assert counter_key("k", before) == counter_key("k", before - 3600)
    assert seconds_until_reset(before) == 1
    assert seconds_until_reset(datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC).timestamp()) == 86_400


def _sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def test_done_event_tokens_are_read_across_any_chunking() -> None:
    stream = (
        _sse("sources", {"sources": []})
        + _sse("token", {"text": "event: done"})
        + _sse("done", {"cached": False, "usage": {"total_tokens": 42}})
    )
    for size in (1, 2, 7, len(stream)):

        async def chunks(size: int = size) -> AsyncIterator[bytes]:
            for start in range(0, len(stream), size):
                yield stream[start : start + size]

        response = httpx2.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=chunks(),
            request=httpx2.Request("POST", "http://rag/v1/query"),
        )
        done = DoneEvents()
        async for event in httpx2.EventSource(response):
            done.feed(event)
        assert done.tokens == 42, size


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (b'{"cached": false, "usage": {"total_tokens": 9}}', 9),
        (b'{"cached": true, "usage": {"total_tokens": 9}}', 0),  # a cached answer spent nothing
        (b'{"usage": {"total_tokens": "9"}}', 0),
        (b'{"usage": {"total_tokens": -5}}', 0),
        (b"not json", 0),
        (b"[1, 2]", 0),
    ],
)
def test_tokens_in_a_json_answer(body: bytes, tokens: int) -> None:
    assert tokens_in_body(body) == tokens


def test_upstream_urls_are_parsed_once_per_path_and_the_cache_is_bounded() -> None:
    upstream = Upstream("rag", "http://rag:8103/", read_timeout_s=1, deadline_s=1)
    assert str(upstream._url("/v1/query")) == "http://rag:8103/v1/query"
    assert upstream._url("/v1/query") is upstream._url("/v1/query")
    for n in range(2 * URL_CACHE_SIZE):  # paths carry client input: collection names, doc ids
        upstream._url(f"/v1/collections/c{n}/documents")
    assert upstream._url.cache_info().currsize <= URL_CACHE_SIZE
