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

import h2.config
import h2.connection
import h2.errors
import h2.events
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


class _Peer:
    """An HTTP/2 server on the ``h2`` state machine, for the protocol paths Granian never takes
    on cue: GOAWAY, a refused stream, header blocks split over CONTINUATION, padded frames."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.requests: list[int] = []  # connection number of each request answered or refused

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded):
                        self._answer(conn, event.stream_id, number)
                writer.write(conn.data_to_send())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, conn: h2.connection.H2Connection, stream_id: int, number: int) -> None:
        self.requests.append(number)
        if self.behaviour == "goaway" and number == 1:
            conn.close_connection(last_stream_id=0)  # nothing processed: the client must resend
            return
        if self.behaviour == "refuse" and len(self.requests) == 1:
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        big = [("x-big", "v" * 40_000)] if self.behaviour == "continuation" else []
        conn.send_headers(stream_id, [(":status", "200"), ("x-connection", str(number)), *big])
        pad = 200 if self.behaviour == "padded" else None
        conn.send_data(stream_id, b"hello ", pad_length=pad)
        conn.send_data(stream_id, b"there", end_stream=True, pad_length=pad)


@pytest.fixture
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, _Peer]]:
    state = _Peer(request.param)
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.close()


@pytest.mark.parametrize("peer", ["goaway"], indirect=True)
async def test_a_goaway_before_processing_is_resent_on_a_new_connection(peer: tuple[str, _Peer]) -> None:
    url, state = peer
    channel = Channel(url)
    try:
        response, content = await _call(channel, "GET", "/")
        assert (response.status, content, response.headers["x-connection"]) == (200, b"hello there", "2")
        assert state.requests == [1, 2]
    finally:
        await channel.aclose()


@pytest.mark.parametrize("peer", ["refuse"], indirect=True)
async def test_a_refused_stream_is_resent(peer: tuple[str, _Peer]) -> None:
    url, state = peer
    channel = Channel(url)
    try:
        response, content = await _call(channel, "POST", "/", b"body")
        assert (response.status, content) == (200, b"hello there")
        assert state.requests == [1, 1]  # the same connection, a new stream
    finally:
        await channel.aclose()


@pytest.mark.parametrize("peer", ["continuation", "padded"], indirect=True)
async def test_split_header_blocks_and_padded_frames_are_read(peer: tuple[str, _Peer]) -> None:
    url, state = peer
    channel = Channel(url)
    try:
        for _ in range(3):  # the decoder's table stays in step across answers
            response, content = await _call(channel, "GET", "/")
            assert (response.status, content) == (200, b"hello there")
            if state.behaviour == "continuation":
                assert response.headers["x-big"] == "v" * 40_000
    finally:
        await channel.aclose()
