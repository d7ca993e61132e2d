"""The gateway's failure behaviour, with real processes: its own Redis, gateways and a small upstream.

The upstream is a real HTTP/2 server process (``create_upstream`` below, served by
Granian) whose handlers can stall, stream on command and report what they saw, so
timeouts, client disconnects and unbuffered SSE are observable from outside.
Redis is a private ``redis-server`` on a free port that these tests stop and start.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.cli.suite import Child, free_port
from services.common.disconnect import ClientDisconnected, cancel_on_disconnect
from services.gateway.keys import KeyStore
from services.gateway.quota import TokenQuota

UPSTREAM_TARGET = "tests.integration.test_gateway_resilience:create_upstream"
ORIGIN = "https://app.example"


def create_upstream() -> FastAPI:
    """A rag stand-in that records what reached it (served in its own process)."""
    app = FastAPI()
    seen: dict[str, Any] = {"cancelled": 0, "streams_cut": 0, "request_id": "", "traceparent": ""}
    release = asyncio.Event()

    @app.get("/health/live")
    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return seen

    @app.post("/release")
    async def do_release() -> dict[str, bool]:
        release.set()
        return {"released": True}

    @app.post("/v1/search")
    async def search(request: Request) -> dict[str, Any]:
        seen["request_id"] = request.headers.get("x-request-id", "")
        seen["traceparent"] = request.headers.get("traceparent", "")
        return {"hits": [], "mode": "dense"}

    @app.post("/v1/query", response_model=None)
    async def query(request: Request) -> Any:
        mode = (await request.json()).get("question")
        if mode == "stall":
            try:
                await cancel_on_disconnect(request, asyncio.sleep(60))
            except ClientDisconnected:
                seen["cancelled"] += 1
            return {"answer": "late"}
        if mode == "answer":
            return {"answer": "a", "cached": False, "usage": {"total_tokens": 5}}
        if mode == "crash":
            return JSONResponse(
                {"detail": "Traceback (most recent call last): redis://10.0.0.7:6379 refused"},
                status_code=500,
            )
        release.clear()

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                yield b'event: sources\ndata: {"sources": []}\n\n'
                await release.wait()
                yield b'event: done\ndata: {"cached": false, "usage": {"total_tokens": 5}}\n\n'
                finished = True
            finally:
                if not finished:
                    seen["streams_cut"] += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@dataclass
class Rig:
    redis_url: str
    upstream: str
    closed: str  # gateway with the fail-closed policy
    open: str  # gateway with the fail-open policy, CORS and a 1 s deadline
    redis_server: Child

    def stop_redis(self) -> None:
        redis.Redis.from_url(self.redis_url).save()  # keys survive the restart
        self.redis_server.kill()

    def start_redis(self) -> None:
        self.redis_server.start()
        _wait(lambda: _redis_answers(self.redis_url))


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition: Any, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("gateway_rig")
    redis_port, upstream_port, closed_port, open_port = (free_port() for _ in range(4))
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_argv = [
        server,
        "--port",
        str(redis_port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    redis_child = Child("redis", [*redis_argv, "--dir", str(tmp)], {}, None, tmp / "redis.log")
    upstream_code = (
        "from services.common.server import serve; from services.common.config import ServiceSettings; "
        f"serve({UPSTREAM_TARGET!r}, ServiceSettings(port={upstream_port}, log_level='warning'))"
    )
    upstream = Child("upstream", [sys.executable, "-c", upstream_code], {}, None, tmp / "upstream.log")
    common = {
        "QUARRY_GATEWAY_RAG_URL": f"http://127.0.0.1:{upstream_port}",
        "QUARRY_GATEWAY_INGEST_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "QUARRY_GATEWAY_REDIS_URL": redis_url,
        "QUARRY_GATEWAY_LOG_LEVEL": "warning",
    }
    gateways = [
        Child(
            f"gateway-{policy}",
            [sys.executable, "-m", "services.gateway"],
            {
                **common,
                "QUARRY_GATEWAY_PORT": str(port),
                "QUARRY_GATEWAY_REDIS_FAILURE_POLICY": policy,
                "QUARRY_GATEWAY_REQUEST_TIMEOUT_S": "1" if policy == "open" else "60",
                "QUARRY_GATEWAY_CORS_ORIGINS": f'["{ORIGIN}"]',
            },
            None,
            tmp / f"gateway-{policy}.log",
        )
        for policy, port in (("closed", closed_port), ("open", open_port))
    ]
    children = [redis_child, upstream, *gateways]
    try:
        for child in children:
            child.start()
        _wait(lambda: _redis_answers(redis_url))
        for port in (upstream_port, closed_port, open_port):
            _wait(lambda port=port: _http_ok(f"http://127.0.0.1:{port}/health/live"))  # type: ignore[misc]
        yield Rig(
            redis_url,
            f"http://127.0.0.1:{upstream_port}",
            f"http://127.0.0.1:{closed_port}",
            f"http://127.0.0.1:{open_port}",
            redis_child,
        )
    finally:
        for child in reversed(children):
            child.stop()


async def _key(rig: Rig, **options: Any) -> str:
    client = aioredis.Redis.from_url(rig.redis_url)
    try:
        secret, _ = await KeyStore(client).create(
            "rig", options.get("scopes", {"query"}), None, options.get("rate_limit", "1000/minute")
        )
    finally:
        await client.aclose()
    return secret


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _search(url: str, key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.post("/v1/search", json={"query": "q"}, headers=_auth(key))


async def test_redis_down_fails_closed_then_recovers_without_restart(rig: Rig) -> None:
    key = await _key(rig)
    assert (await _search(rig.closed, key)).status_code == 200
    rig.stop_redis()
    try:
        down = await _search(rig.closed, key)
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "auth_unavailable"
        assert int(down.headers["retry-after"]) >= 1
        async with httpx.AsyncClient(base_url=rig.closed) as client:
            ready = await client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
    finally:
        rig.start_redis()
    # The breaker skips Redis for redis_retry_s after a failure, then the gateway tries again.
    for _ in range(150):
        if (up := await _search(rig.closed, key)).status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert up.status_code == 200
    assert "x-quarry-degraded" not in up.headers
    assert up.headers["x-ratelimit-limit"] == "1000"


async def test_redis_down_fails_open_for_recently_seen_keys_only(rig: Rig) -> None:
    seen_key = await _key(rig, rate_limit="1/minute")
    unseen_key = await _key(rig)
    first = await _search(rig.open, seen_key)
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining"] == "0"
    rig.stop_redis()
    try:
        # Over its 1/minute limit, yet admitted: without Redis there is no window to count in.
        degraded = await _search(rig.open, seen_key)
        assert degraded.status_code == 200
        assert set(degraded.headers["x-quarry-degraded"].split(",")) == {
            "keys_cached",
            "rate_limit_off",
            "token_quota_off",
        }
        assert "x-ratelimit-limit" not in degraded.headers
        unseen = await _search(rig.open, unseen_key)
        assert unseen.status_code == 503 and unseen.json()["error"]["code"] == "auth_unavailable"
        wrong = await _search(rig.open, seen_key[:-4] + "AAAA")
        assert wrong.status_code == 401
        async with httpx.AsyncClient(base_url=rig.open) as client:
            assert (await client.get("/health/ready")).status_code == 200  # stays in rotation
    finally:
        rig.start_redis()
    deadline = time.monotonic() + 30
    while "x-quarry-degraded" in (back := await _search(rig.open, seen_key)).headers:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert back.status_code == 429  # counting again: the 1/minute window is spent


async def test_answers_count_against_the_daily_token_quota(rig: Rig) -> None:
    client = aioredis.Redis.from_url(rig.redis_url)
    try:
        key, stored = await KeyStore(client).create("quota", {"query"}, None, "100/minute", 5)
        async with httpx.AsyncClient(base_url=rig.closed, timeout=30) as gateway:
            first = await gateway.post("/v1/query", json={"question": "answer"}, headers=_auth(key))
            assert first.status_code == 200 and first.headers["x-tokenquota-remaining"] == "5"
            assert await TokenQuota(client).used(stored.key_id) == 5  # the answer's usage.total_tokens
            second = await gateway.post("/v1/query", json={"question": "answer"}, headers=_auth(key))
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "token_quota_exceeded"
    finally:
        await client.aclose()


async def test_slow_upstream_is_504_json(rig: Rig) -> None:
    key = await _key(rig)
    async with httpx.AsyncClient(base_url=rig.open, timeout=30) as client:
        response = await client.post("/v1/query", json={"question": "stall"}, headers=_auth(key))
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


async def test_upstream_500_is_502_without_its_details(rig: Rig) -> None:
    key = await _key(rig)
    async with httpx.AsyncClient(base_url=rig.closed, timeout=30) as client:
        response = await client.post("/v1/query", json={"question": "crash"}, headers=_auth(key))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_gateway"
    for leak in ("Traceback", "10.0.0.7", "127.0.0.1", "redis://"):
        assert leak not in response.text


async def test_upstream_down_is_503_without_its_address(rig: Rig) -> None:
    key = await _key(rig, scopes={"ingest"})
    async with httpx.AsyncClient(base_url=rig.closed, timeout=30) as client:
        response = await client.get("/v1/collections", headers=_auth(key))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in response.text


async def _stats(rig: Rig) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=rig.upstream) as client:
        stats: dict[str, Any] = (await client.get("/stats")).json()
    return stats


async def _until(rig: Rig, field: str, above: int, tries: int = 150) -> int:
    for _ in range(tries):
        value = int((await _stats(rig))[field])
        if value > above:
            return value
        await asyncio.sleep(0.1)
    return value


# The gateway closes the upstream connection of a request its client abandoned; Granian
# delivers that to the upstream handler as a disconnect, so the upstream work stops too.
async def test_client_disconnect_cancels_the_upstream_call(rig: Rig) -> None:
    key = await _key(rig)
    before = int((await _stats(rig))["cancelled"])
    async with httpx.AsyncClient(base_url=rig.closed, timeout=1.0) as client:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            await client.post("/v1/query", json={"question": "stall"}, headers=_auth(key))
    assert await _until(rig, "cancelled", before, tries=30) == before + 1


async def _read_stream(rig: Rig, key: str, *, release_after_first: bool) -> bytes:
    received = b""
    body = {"question": "stream", "stream": True}
    async with (
        httpx.AsyncClient(base_url=rig.closed, timeout=30) as client,
        client.stream("POST", "/v1/query", json=body, headers=_auth(key)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_raw():
            received += chunk
            if b"event: sources" in received and b"event: done" not in received:
                # The upstream holds its second event until released: the first one can
                # only be here if the gateway relayed it without buffering.
                if not release_after_first:
                    return received
                async with httpx.AsyncClient(base_url=rig.upstream) as upstream:
                    await upstream.post("/release")
                release_after_first = False
    return received


async def test_sse_is_relayed_unbuffered_and_its_tokens_counted(rig: Rig) -> None:
    client = aioredis.Redis.from_url(rig.redis_url)
    try:
        key, stored = await KeyStore(client).create("sse", {"query"}, None, "100/minute", 1000)
        whole = await asyncio.wait_for(_read_stream(rig, key, release_after_first=True), 20)
        assert whole.index(b"event: sources") < whole.index(b"event: done")
        # The upstream's done event says 5 tokens; the gateway read them off the stream.
        assert await TokenQuota(client).used(stored.key_id) == 5
    finally:
        await client.aclose()


async def test_a_client_leaving_a_stream_cuts_the_upstream_stream(rig: Rig) -> None:
    key = await _key(rig)
    cut_before = int((await _stats(rig))["streams_cut"])
    await asyncio.wait_for(_read_stream(rig, key, release_after_first=False), 20)
    assert await _until(rig, "streams_cut", cut_before, tries=30) == cut_before + 1
    async with httpx.AsyncClient(base_url=rig.upstream) as upstream:
        await upstream.post("/release")


async def test_request_id_and_trace_reach_the_upstream(rig: Rig) -> None:
    key = await _key(rig)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {
        **_auth(key),
        "x-request-id": "req-abc.123",
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
    }
    async with httpx.AsyncClient(base_url=rig.closed, timeout=30) as client:
        response = await client.post("/v1/search", json={"query": "q"}, headers=headers)
    assert response.headers["x-request-id"] == "req-abc.123"
    stats = await _stats(rig)
    assert stats["request_id"] == "req-abc.123"
    assert stats["traceparent"].split("-")[1] == trace_id


async def test_a_known_keys_requests_carry_ids_and_cors_headers(rig: Rig) -> None:
    """Every request of a key, the first and those after it, gets the request id, the trace
    and the CORS headers."""
    key = await _key(rig)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with httpx.AsyncClient(base_url=rig.closed, timeout=30) as client:
        answers = [
            await client.post(
                "/v1/search",
                json={"query": "q"},
                headers={
                    **_auth(key),
                    "origin": ORIGIN,
                    "x-request-id": f"cors-{i}",
                    "traceparent": f"00-{trace_id}-b7ad6b7169203331-01",
                },
            )
            for i in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    for i, answer in enumerate(answers):
        assert answer.headers["x-request-id"] == f"cors-{i}"
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        exposed = answer.headers["access-control-expose-headers"].lower()
        # A browser app reads its key's request and token budgets only from exposed headers.
        assert "x-ratelimit-remaining" in exposed and "x-tokenquota-remaining" in exposed
        _, answered_trace, span, _ = answer.headers["traceparent"].split("-")
        assert answered_trace == trace_id and span != "b7ad6b7169203331"  # our span, the caller's trace
    stats = await _stats(rig)
    assert stats["request_id"] == "cors-2"
    assert stats["traceparent"].split("-")[1] == trace_id


async def test_cors_by_setting(rig: Rig) -> None:
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization",
    }
    async with httpx.AsyncClient(base_url=rig.closed) as client:
        allowed = await client.options("/v1/query", headers=preflight)
        other = await client.options("/v1/query", headers={**preflight, "origin": "https://evil.example"})
        refused = await client.post("/v1/query", json={}, headers={"origin": ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in other.headers
    # Errors carry CORS headers too, so a browser app can read the JSON error.
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()
