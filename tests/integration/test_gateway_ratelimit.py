"""The gateway's rate limit against the real Redis: slowapi counts in a worker thread, never on
the event loop, and a 429 carries the headers an admitted request gets."""

from __future__ import annotations

import secrets
import threading

import pytest
from fastapi import Response
from starlette.requests import Request

from services.common.errors import APIError
from services.gateway import ratelimit
from services.gateway.auth import current_rate_limit
from services.gateway.keys import ApiKey
from services.gateway.ratelimit import RateLimits
from services.gateway.store_breaker import StoreBreaker


def _request(key: ApiKey) -> Request:
    request = Request({"type": "http", "method": "POST", "path": "/v1/search", "headers": []})
    request.state.api_key = key
    request.state.degraded = []
    return request


def _key(rate_limit: str) -> ApiKey:
    return ApiKey(secrets.token_hex(8), "t", frozenset({"query"}), None, rate_limit)


async def test_slowapi_counts_in_a_worker_thread(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    key_func = ratelimit._limit_key

    def recording(request: Request) -> str:
        threads.append(threading.current_thread())
        return key_func(request)

    monkeypatch.setattr(ratelimit, "_limit_key", recording)
    limits = RateLimits(redis_url, StoreBreaker(1.0, fail_open=False))
    key = _key("5/minute")
    current_rate_limit.set(key.rate_limit)
    response = Response()
    await limits.count(_request(key), response)
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert (response.headers["x-ratelimit-limit"], response.headers["x-ratelimit-remaining"]) == ("5", "4")


async def test_past_the_limit_is_429_with_the_same_headers(redis_url: str) -> None:
    limits = RateLimits(redis_url, StoreBreaker(1.0, fail_open=False))
    key = _key("1/minute")
    current_rate_limit.set(key.rate_limit)
    admitted = Response()
    await limits.count(_request(key), admitted)
    with pytest.raises(APIError) as refused:
        await limits.count(_request(key), Response())
    error = refused.value
    assert (error.status, error.code, error.message) == (
        429,
        "rate_limited",
        "rate limit exceeded: 1 per 1 minute",
    )
    assert error.headers["x-ratelimit-limit"] == "1" and error.headers["x-ratelimit-remaining"] == "0"
    assert error.headers["x-ratelimit-reset"] == admitted.headers["x-ratelimit-reset"]
    assert 1 <= int(error.headers["retry-after"]) <= 61
