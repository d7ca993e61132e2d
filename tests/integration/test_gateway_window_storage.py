"""The one-round-trip moving window against the real Redis: same answers as limits' own
storage, half the round trips."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from limits import parse
from limits.storage import RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from services.gateway.window_storage import OneTripRedisStorage, one_trip_uri


def counting(storage: RedisStorage) -> list[Any]:
    calls: list[Any] = []
    client = storage.get_connection()
    inner = client.execute_command

    def execute_command(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return inner(*args, **kwargs)

    client.execute_command = execute_command  # type: ignore[method-assign]
    return calls


def test_selected_for_plain_redis_only(redis_url: str) -> None:
    assert isinstance(storage_from_string(one_trip_uri(redis_url)), OneTripRedisStorage)
    assert one_trip_uri("redis+sentinel://h:26379/m") == "redis+sentinel://h:26379/m"


@pytest.mark.parametrize("limit", ["5/minute", "1/second", "40/hour"])
def test_same_decisions_and_headers_as_limits_own_storage(redis_url: str, limit: str) -> None:
    item = parse(limit)
    ours = MovingWindowRateLimiter(storage_from_string(one_trip_uri(redis_url)))
    theirs = MovingWindowRateLimiter(storage_from_string(redis_url))
    a, b = f"ours-{uuid.uuid4().hex}", f"theirs-{uuid.uuid4().hex}"
    for _ in range(item.amount + 3):  # past the limit
        assert ours.hit(item, a) == theirs.hit(item, b)
        mine, reference = ours.get_window_stats(item, a), theirs.get_window_stats(item, b)
        assert mine.remaining == reference.remaining
        assert abs(mine.reset_time - reference.reset_time) < 0.5
    assert not ours.hit(item, a)


def test_one_round_trip_per_counted_request(redis_url: str) -> None:
    item = parse("100/minute")
    storage = storage_from_string(one_trip_uri(redis_url))
    assert isinstance(storage, OneTripRedisStorage)
    limiter = MovingWindowRateLimiter(storage)
    key = uuid.uuid4().hex
    limiter.hit(item, key)  # loads the script once
    calls = counting(storage)
    for n in range(10):
        assert limiter.hit(item, key)
        assert limiter.get_window_stats(item, key).remaining == item.amount - n - 2
    assert calls == ["EVALSHA"] * 10
    # A window read with no acquire before it (another key) still asks Redis.
    assert limiter.get_window_stats(item, "other-" + key).remaining == item.amount
    assert len(calls) == 11
