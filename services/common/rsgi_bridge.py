"""Serves an ASGI app on Granian's RSGI interface.

Granian's ASGI interface crosses from its Rust side into Python for every ``receive`` and
``send``; RSGI reads a declared body in one call and writes a whole answer in one call
that is not awaited. This bridge keeps the app ASGI (FastAPI, its middlewares, its tests)
and speaks RSGI to the server: an answer sent as one body goes out through
``response_bytes``, a streamed one through ``response_stream``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from granian.asgi import LifespanProtocol
from granian.rsgi import Scope as RSGIScope
from starlette.types import ASGIApp, Message

# Bodies that declare a length up to this are read in one call; larger or undeclared ones
# are streamed, so a body cap can refuse them before they are all in memory.
_READ_WHOLE_BYTES = 64 * 1024
_ASGI = {"version": "3.0", "spec_version": "2.3"}


class RSGIBridge:
    """An RSGI application (``__rsgi__``) that runs an ASGI app, lifespan included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lifespan = LifespanProtocol(app)  # type: ignore[no-untyped-call]  # Granian's own

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._lifespan.startup())  # type: ignore[no-untyped-call]
        if self._lifespan.interrupt:
            raise RuntimeError("application startup failed") from self._lifespan.exc

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._lifespan.shutdown())  # type: ignore[no-untyped-call]

    async def __rsgi__(self, scope: RSGIScope, protocol: HTTPProtocol) -> None:
        if scope.proto != "http":  # no service of ours speaks websockets
            return
        exchange = _Exchange(protocol, scope.headers.get("content-length"))
        try:
            await self.app(self._asgi_scope(scope), exchange.receive, exchange.send)
        finally:
            exchange.close()

    def _asgi_scope(self, scope: RSGIScope) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": scope.path,  # Granian gives it percent-decoded, as ASGI's path is
            "raw_path": scope.path.encode(),
            "query_string": scope.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
            "client": _address(scope.client),
            "server": _address(scope.server),
            "state": self._lifespan.state.copy(),
        }


class _Exchange:
    """One request's ASGI ``receive`` and ``send`` over its RSGI protocol object."""

    __slots__ = (
        "_body_done",
        "_chunks",
        "_finished",
        "_gone",
        "_protocol",
        "_start",
        "_stream",
        "_watch",
        "_whole",
    )

    def __init__(self, protocol: HTTPProtocol, declared_length: str | None) -> None:
        self._protocol = protocol
        declared = int(declared_length) if declared_length and declared_length.isdigit() else None
        # A small declared body is read in one call; None: streamed.
        self._whole = declared if declared is not None and declared <= _READ_WHOLE_BYTES else None
        self._chunks: Any = None
        self._body_done = False
        self._start: Message | None = None
        self._stream: Any = None
        self._finished = False
        self._gone: asyncio.Future[None] | None = None
        self._watch: asyncio.Future[None] | None = None

    async def receive(self) -> Message:
        if self._body_done or self._finished:
            # The body is read: what comes next can only be the client leaving.
            if not self._finished:
                # Shielded: a cancelled receive (Starlette's disconnect listener, once a stream
                # is sent) must return at once, not wait on Granian's watch.
                await asyncio.shield(self._left())
            return {"type": "http.disconnect"}
        if self._whole is not None:
            self._body_done = True
            try:
                body = await self._protocol()
            except (ProtocolError, ProtocolClosed):
                body = b""
            if len(body) < self._whole:  # the client left mid-body
                self._finished = True
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        if self._chunks is None:
            self._chunks = self._protocol.__aiter__()
        try:
            chunk = await self._chunks.__anext__()
        except (ProtocolError, ProtocolClosed):  # the client left mid-body
            self._finished = True
            return {"type": "http.disconnect"}
        except StopAsyncIteration:
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": bytes(chunk), "more_body": True}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            return
        if kind != "http.response.body" or self._start is None or self._finished:
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self._stream is None and not more:
            self._finished = True
            self._protocol.response_bytes(self._start["status"], _headers(self._start), body)
            return
        if self._stream is None:
            self._stream = self._protocol.response_stream(self._start["status"], _headers(self._start))
        if body:
            try:
                await self._stream.send_bytes(body)
            except ProtocolClosed:
                # The client left mid-stream. Not raised: Starlette would leave the app's body
                # iterator (rag's stream) open. Its disconnect listener cancels the stream instead.
                self._finished = True
                self._stream = None
                self._left_now()
                return
        if not more:
            self._finished = True
            # Granian ends the stream when its transport is dropped: the app may keep this
            # exchange alive in a reference cycle (its Request), so let go of it now.
            self._stream = None

    def _gone_future(self) -> asyncio.Future[None]:
        """Done once the client has left: Granian says so, or a write found it gone."""
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        return self._gone

    def _left(self) -> asyncio.Future[None]:
        """``_gone_future``, with Granian's watch started for it."""
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._protocol.client_disconnect())
            self._watch.add_done_callback(lambda _: self._left_now())
        return self._gone_future()

    def _left_now(self) -> None:
        gone = self._gone_future()
        if not gone.done():
            gone.set_result(None)

    def close(self) -> None:
        """Ends an answer the app left unfinished: RSGI needs one for every request."""
        if self._watch is not None:
            self._watch.cancel()
        if self._stream is not None:  # a stream cut short: dropping its transport ends it
            self._stream = None
            return
        if self._finished:
            return
        self._finished = True
        if self._start is None:  # the app ended without answering
            self._protocol.response_empty(500, [])
        else:
            self._protocol.response_bytes(self._start["status"], _headers(self._start), b"")


def _headers(start: Message) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", ())]


def _address(value: str) -> tuple[str, int] | None:
    host, _, port = value.rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None
