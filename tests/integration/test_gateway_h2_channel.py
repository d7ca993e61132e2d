"""The gateway's HTTP/2 upstream channel against a real Granian server process.

Covers what the gateway relies on: flow control both ways for bodies far larger than
HTTP/2's default 64 KiB window, many streams multiplexed at once, a reset reaching the
server when a reader gives up, and reconnecting by itself after the upstream restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from services.cli.suite import Child, free_port
from services.gateway.h2_channel import Channel, ChannelError, ConnectFailed

TARGET = "tests.integration.test_gateway_h2_channel:create_echo"


def create_echo() -> FastAPI:
    app = FastAPI()
    seen = {"disconnects": 0}

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/seen")
    async def get_seen() -> dict[str, int]:
        return seen

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        headers = {"x-sha256": hashlib.sha256(body).hexdigest(), "x-echo-query": request.url.query}
        return Response(body, headers=headers, media_type="application/octet-stream")

    @app.get("/blob/{size}")
    async def blob(size: int) -> Response:
        return Response(bytes(i % 251 for i in range(size)), media_type="application/octet-stream")

    @app.get("/endless")
    async def endless(request: Request) -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"tick\n"
                    await asyncio.sleep(0.05)
            finally:
                seen["disconnects"] += 1

        return StreamingResponse(ticks(), media_type="text/plain")

    return app


def _server(port: int, log: Path) -> Child:
    code = (
        "from services.common.server import serve; from services.common.config import ServiceSettings; "
        f"serve({TARGET!r}, ServiceSettings(port={port}, log_level='warning'))"
    )
    return Child("echo", [sys.executable, "-c", code], {}, None, log)


def _wait_live(url: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Child]]:
    port = free_port()
    child = _server(port, tmp_path_factory.mktemp("echo") / "echo.log")
    child.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_live(url)
        yield url, child
    finally:
        child.stop()


async def _call(channel: Channel, method: str, path: str, body: bytes | None = None) -> tuple[Any, bytes]:
    response = await channel.request(
        method, path, body=body, headers=[("content-type", "application/octet-stream")]
    )
    try:
        return response, await response.read(timeout_s=30)
    finally:
        response.close()


async def test_large_bodies_cross_both_ways_under_flow_control(echo: tuple[str, Child]) -> None:
    channel = Channel(echo[0])
    try:
        body = bytes(range(256)) * (6 * 1024 * 1024 // 256)  # 6 MiB: ~100 default windows
        response, content = await _call(channel, "POST", "/echo?a=1&b=two", body)
        assert response.status == 200
        assert content == body
        assert response.headers["x-sha256"] == hashlib.sha256(body).hexdigest()
        assert response.headers["x-echo-query"] == "a=1&b=two"
        response, content = await _call(channel, "GET", "/blob/5000000")
        assert len(content) == 5_000_000 and content[:3] == bytes([0, 1, 2])
        # The connection-level windows came back: another large exchange still fits.
        response, content = await _call(channel, "POST", "/echo", body)
        assert content == body
    finally:
        await channel.aclose()


async def test_many_streams_multiplex_and_each_gets_its_own_answer(echo: tuple[str, Child]) -> None:
    channel = Channel(echo[0], max_connections=2)
    try:
        bodies = [f"request {i}".encode() * (i + 1) for i in range(300)]
        results = await asyncio.gather(*(_call(channel, "POST", "/echo", b) for b in bodies))
        assert [content for _, content in results] == bodies
    finally:
        await channel.aclose()


async def test_closing_a_response_early_resets_the_stream_upstream(echo: tuple[str, Child]) -> None:
    channel = Channel(echo[0])
    try:
        _, seen = await _call(channel, "GET", "/seen")
        before = int(seen.split(b'"disconnects":')[1].rstrip(b"}"))
        response = await channel.request("GET", "/endless")
        chunks = response.iter_chunks(timeout_s=10)
        assert (await chunks.__anext__()).startswith(b"tick")
        await chunks.aclose()
        response.close()
        for _ in range(50):
            _, seen = await _call(channel, "GET", "/seen")
            if int(seen.split(b'"disconnects":')[1].rstrip(b"}")) > before:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the upstream never saw the stream end")
        # The connection is still good for the next request.
        response, content = await _call(channel, "POST", "/echo", b"after")
        assert content == b"after"
    finally:
        await channel.aclose()


async def test_reconnects_by_itself_after_the_upstream_restarts(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _server(port, tmp_path / "echo.log")
    server.start()
    channel = Channel(url)
    try:
        _wait_live(url)
        assert (await _call(channel, "POST", "/echo", b"one"))[1] == b"one"
        server.kill()
        # Until the dying server's socket is gone a call may still connect and be cut
        # (ChannelError); after that, every call is a clean ConnectFailed.
        for _ in range(50):
            with pytest.raises(ChannelError) as failure:
                await _call(channel, "POST", "/echo", b"two")
            if failure.type is ConnectFailed:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("calls to a killed upstream never became connect failures")
        server.start()
        _wait_live(url)
        assert (await _call(channel, "POST", "/echo", b"three"))[1] == b"three"
    finally:
        await channel.aclose()
        server.stop()


async def test_nothing_listening_is_a_connect_failure() -> None:
    channel = Channel(f"http://127.0.0.1:{free_port()}", connect_timeout_s=1)
    with pytest.raises(ConnectFailed):
        await channel.request("GET", "/")
    await channel.aclose()


def test_only_plain_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError):
        Channel("https://rag:8080")
