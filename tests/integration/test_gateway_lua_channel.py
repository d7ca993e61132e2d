"""The gateway's pipelined Redis connection for its admission script, against real Redis
servers: the test Redis, and a private ``redis-server`` that these tests stop, start and stall."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.cli.suite import Child, free_port
from services.common.errors import APIError
from services.gateway.admission import ADMIT_SCRIPT, Admission
from services.gateway.auth import Gatekeeper
from services.gateway.key_cache import KeyCache
from services.gateway.keys import KeyStore
from services.gateway.lua_channel import LuaChannel, supports
from services.gateway.quota import TokenQuota
from services.gateway.ratelimit import create_limiter, window_identifiers
from services.gateway.store_breaker import StoreBreaker
from tests.integration.test_gateway_admission import _window

_PASSWORD = "s3cret"


def _fresh(body: str) -> bytes:
    # A script Redis has never seen, so the first EVALSHA meets NOSCRIPT.
    return f"-- {uuid.uuid4().hex}\n{body}".encode()


class _Private:
    def __init__(self, tmp: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        argv = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--requirepass", _PASSWORD, "--enable-debug-command", "yes", "--dir", str(tmp)]
        self.child = Child("redis", argv, {}, None, tmp / "redis.log")

    def url(self, db: int = 0) -> str:
        return f"redis://:{_PASSWORD}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.child.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                if redis.Redis.from_url(self.url(), socket_connect_timeout=0.5).ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


@pytest.fixture
def private(tmp_path: Path) -> Iterator[_Private]:
    server = _Private(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.child.stop()


@pytest.fixture
async def channel(redis_url: str) -> AsyncIterator[LuaChannel]:
    script = _fresh("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2, false, {1, 'two'}}")
    lua = LuaChannel(redis_url, script, timeout_s=5)
    try:
        yield lua
    finally:
        await lua.aclose()


def test_only_plain_redis_urls_are_taken() -> None:
    assert supports("redis://127.0.0.1:6379/0")
    assert not supports("rediss://cache:6380/0")
    assert not supports("unix:///run/redis.sock")
    with pytest.raises(ValueError):
        LuaChannel("rediss://cache:6380/0", b"return 1", timeout_s=1)


async def test_replies_come_back_as_redis_py_gives_them_after_loading_the_script(
    channel: LuaChannel,
) -> None:
    # First call: NOSCRIPT, then EVAL. Second: the script is cached by its SHA-1.
    for _ in range(2):
        assert await channel(["k"], ["v", 21]) == [b"k", b"v", 42, None, [1, b"two"]]


async def test_many_calls_in_flight_each_get_their_own_reply(channel: LuaChannel) -> None:
    replies = await asyncio.gather(*(channel([f"key{i}"], [f"value{i}", i]) for i in range(300)))
    assert [r[:3] for r in replies] == [[f"key{i}".encode(), f"value{i}".encode(), 2 * i] for i in range(300)]


async def test_a_script_error_is_a_response_error(redis_url: str) -> None:
    lua = LuaChannel(redis_url, _fresh("return redis.call('no-such-command')"), timeout_s=5)
    try:
        for _ in range(2):  # an error reply leaves the connection in step: the same error again
            with pytest.raises(ResponseError, match=r"no-such-command|Unknown"):
                await lua([], [])
    finally:
        await lua.aclose()


async def test_auth_and_database_from_the_url(private: _Private) -> None:
    client = redis.Redis.from_url(private.url(3))
    client.set("where", "db3")
    lua = LuaChannel(private.url(3), _fresh("return redis.call('get', KEYS[1])"), timeout_s=5)
    wrong = LuaChannel(private.url(3).replace(_PASSWORD, "wrong"), b"return 1", timeout_s=5)
    try:
        assert await lua(["where"], []) == b"db3"
        with pytest.raises(RedisConnectionError):
            await wrong([], [])
    finally:
        await lua.aclose()
        await wrong.aclose()
        client.close()


async def test_redis_down_is_a_redis_error_and_the_channel_recovers_by_itself(private: _Private) -> None:
    lua = LuaChannel(private.url(), _fresh("return ARGV[1]"), timeout_s=1)
    try:
        assert await lua([], ["before"]) == b"before"
        private.child.kill()
        with pytest.raises(RedisError):
            await lua([], ["while down"])
        private.start()
        assert await lua([], ["after"]) == b"after"  # same channel: it dialled again
    finally:
        await lua.aclose()


async def test_a_stalled_redis_times_out_and_later_calls_still_match_their_replies(private: _Private) -> None:
    lua = LuaChannel(private.url(), _fresh("return ARGV[1]"), timeout_s=0.3)
    sleeper = aioredis.Redis.from_url(private.url())
    try:
        assert await lua([], ["warm"]) == b"warm"
        stall = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "1"))
        await asyncio.sleep(0.1)
        with pytest.raises(RedisTimeoutError):
            await lua([], ["stalled"])
        await stall
        # The stalled call's late reply must not reach this caller.
        assert await lua([], ["next"]) == b"next"
    finally:
        await lua.aclose()
        await sleeper.aclose()


async def test_admission_over_the_channel_reads_record_window_and_tokens(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lua = LuaChannel(redis_url, ADMIT_SCRIPT, timeout_s=5)
    limiter = create_limiter(redis_url, fail_open=False)
    store = KeyStore(client)
    admission = Admission(lua, limiter, window_identifiers(limiter))
    gatekeeper = Gatekeeper(store, KeyCache(60), StoreBreaker(1.0, fail_open=False), admission)
    try:
        secret, key = await store.create("lua", {"query"}, None, "2/minute", daily_token_quota=50)
        await TokenQuota(client).add(key.key_id, 9)
        await gatekeeper.authenticate(secret, "query")  # unseen: read alone
        passed = await gatekeeper.authenticate(secret, "query")
        assert (passed.key.key_id, passed.tokens_used) == (key.key_id, 9)
        assert await client.llen(_window(limiter, key.key_id, key.rate_limit)) == 1  # counted on the way in
        assert await store.revoke(key.key_id)
        with pytest.raises(APIError) as refused:
            await gatekeeper.authenticate(secret, "query")
        assert refused.value.status == 401
    finally:
        await lua.aclose()
        await client.aclose()
