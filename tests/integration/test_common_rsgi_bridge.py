"""``RSGIBridge``: an ASGI app served by a real Granian process on its RSGI interface.

The gateway serves its FastAPI app this way behind the express lane, so every route that is
not the lane's passes here: lifespan, streamed answers over HTTP/2, streamed uploads, the
request's path, query and headers, and an app that ends without answering.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from services.cli.suite import Child, free_port
from services.common.http_client import create_http2_client
from services.common.rsgi_bridge import RSGIBridge

_MARKS = "QUARRY_TEST_BRIDGE_MARKS"


def _mark(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def create_bridged() -> RSGIBridge:
    """The app under test (served in its own process): its lifespan leaves marks in a file."""
    marks = Path(os.environ[_MARKS])

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, str]]:
        _mark(marks, "started\n")
        yield {"greeting": "hello"}
        _mark(marks, "stopped\n")

    async def echo(request: Request) -> JSONResponse:
        body = b""
        async for chunk in request.stream():
            body += chunk
        return JSONResponse(
            {
                "path": request.url.path,
                "query": request.url.query,
                "tags": request.headers.getlist("x-tag"),
                "length": len(body),
                "greeting": request.state.greeting,
                "http_version": request.scope["http_version"],
            }
        )

    async def events(_: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"data: {n}\n\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def hold(_: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                while True:  # a write soon finds the client gone
                    await asyncio.sleep(0.01)
                    yield b"data: tick\n\n"
            finally:  # as rag's relayed stream is closed, and its upstream stream reset
                _mark(marks, "stream closed\n")

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def mute(_: Request) -> Response:
        raise RuntimeError("no answer")

    routes = [
        Route("/echo/{rest:path}", echo, methods=["POST"]),
        Route("/events", events),
        Route("/hold", hold),
        Route("/mute", mute),
    ]
    return RSGIBridge(Starlette(routes=routes, lifespan=lifespan))


def _serve(tmp: Path) -> tuple[str, Path, Child]:
    """A Granian process serving ``create_bridged`` on RSGI, answering."""
    port = free_port()
    code = (
        "from granian import Granian; from granian.constants import HTTPModes, Interfaces; "
        f"Granian(target='{__name__}:create_bridged', factory=True, address='127.0.0.1', port={port}, "
        "interface=Interfaces.RSGI, http=HTTPModes.auto, log_enabled=False).serve()"
    )
    marks = tmp / "marks"
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-c", code]
    child = Child("bridged", argv, {_MARKS: str(marks)}, f"{url}/events", tmp / "bridged.log")
    child.start()
    try:
        child.wait_ready(time.monotonic() + 60)
    except BaseException:
        child.stop()
        raise
    return url, marks, child


@pytest.fixture(scope="module")
def bridged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Child]]:
    url, marks, child = _serve(tmp_path_factory.mktemp("bridge"))
    try:
        yield url, marks, child
    finally:
        child.stop()


async def test_the_request_reaches_the_app_whole(bridged: tuple[str, Path, Child]) -> None:
    url, _, _ = bridged
    async with create_http2_client(url, timeout_s=30) as client:
        answer = await client.post(
            "/echo/a%20b/c?x=%201&y=2",
            content=b"z" * 1000,
            headers=[("x-tag", "one"), ("x-tag", "two")],
        )
    assert answer.status_code == 200
    assert answer.json() == {
        "path": "/echo/a b/c",
        "query": "x=%201&y=2",
        "tags": ["one", "two"],
        "length": 1000,
        "greeting": "hello",  # the lifespan's state
        "http_version": "2",
    }


async def test_a_streamed_upload_arrives_in_full(bridged: tuple[str, Path, Child]) -> None:
    url, _, _ = bridged

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"y" * 65_536

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:  # chunked: no length declared
        answer = await client.post("/echo/upload", content=pieces())
    assert answer.json()["length"] == 40 * 65_536


async def test_a_streamed_answer_ends_and_the_connection_goes_on(bridged: tuple[str, Path, Child]) -> None:
    """Over HTTP/2 a stream ends only when the bridge lets go of Granian's transport; before it
    did, the answer never ended for a Starlette app, which keeps its request in a cycle."""
    url, _, _ = bridged
    async with create_http2_client(url, timeout_s=10) as client:
        for _ in range(3):  # one connection, one stream after another
            answer = await client.get("/events")
            assert answer.status_code == 200
            assert answer.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


@pytest.mark.parametrize("http2", [False, True])
async def test_a_client_that_leaves_a_stream_closes_its_body_iterator(
    bridged: tuple[str, Path, Child], http2: bool
) -> None:
    """The app's body iterator is closed when its client leaves: for the gateway that is its
    relay of rag's stream, whose closing resets rag's stream too."""
    url, marks, _ = bridged
    closed_before = marks.read_text().count("stream closed")
    async with (
        httpx.AsyncClient(base_url=url, timeout=10, http1=not http2, http2=http2) as client,
        client.stream("GET", "/hold") as answer,
    ):
        async for chunk in answer.aiter_raw():
            assert chunk.startswith(b"data: first")
            break
    deadline = time.monotonic() + 10
    while marks.read_text().count("stream closed") == closed_before:
        assert time.monotonic() < deadline, "the app's stream was never closed"
        await asyncio.sleep(0.05)


async def test_an_app_that_fails_before_answering_gives_500(bridged: tuple[str, Path, Child]) -> None:
    url, _, _ = bridged
    async with create_http2_client(url, timeout_s=10) as client:
        assert (await client.get("/mute")).status_code == 500
        assert (await client.get("/events")).status_code == 200  # the process goes on


def test_the_lifespan_ends_with_the_server(tmp_path: Path) -> None:
    _, marks, child = _serve(tmp_path)
    child.stop()
    assert marks.read_text() == "started\nstopped\n"
