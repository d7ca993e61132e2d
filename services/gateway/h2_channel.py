"""A lean HTTP/2 cleartext client for the gateway's upstream hop, built on the ``h2`` state machine.

The gateway relays every request, so its client sits on the hot path twice (request and
answer). httpx/httpcore pay a pool, a lock and several objects per request, and send no
RST_STREAM when a caller gives up on a stream, so an abandoned upstream call kept running.
This client keeps one or a few multiplexed connections per upstream, writes a whole
request in one ``transport.write``, and resets a stream the moment its reader closes it
early: a client leaving the gateway now stops the upstream work too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

# A stream whose reader keeps up never waits for a WINDOW_UPDATE; the window refills as
# the reader takes chunks, so a slow client still pushes back on the upstream.
_WINDOW = 16 * 1024 * 1024
# Open another connection when every open one carries this many streams (up to the cap).
_STREAMS_PER_CONNECTION = 64


class ChannelError(Exception):
    """The upstream could not be reached or dropped the stream."""


class ConnectFailed(ChannelError):
    """No connection could be opened: the request never left."""


class Refused(ChannelError):
    """The upstream refused the stream before processing it (GOAWAY, REFUSED_STREAM): safe to resend."""


class _Stream:
    __slots__ = ("chunks", "consumed", "ended", "error", "headers", "response", "window_open")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.response: asyncio.Future[list[tuple[bytes, bytes]]] = loop.create_future()
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.consumed: asyncio.Event = asyncio.Event()  # set whenever chunks arrive or it ends
        self.window_open: asyncio.Event = asyncio.Event()
        self.ended = False
        self.error: ChannelError | None = None
        self.headers: list[tuple[bytes, bytes]] = []

    def fail(self, error: ChannelError) -> None:
        if self.ended:
            return
        self.error = error
        self.ended = True
        if not self.response.done():
            self.response.set_exception(error)
            self.response.exception()  # retrieved: nobody may be waiting any more
        self.consumed.set()
        self.window_open.set()


class _Connection(asyncio.Protocol):
    def __init__(self, authority: bytes) -> None:
        self._authority = authority
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config=config)
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._writable = asyncio.Event()
        self._writable.set()
        self.usable = True  # false after GOAWAY or loss: no new streams

    @property
    def active(self) -> int:
        return len(self._streams)

    # Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._lose(ChannelError(f"protocol error: {exc}"))
            return
        for event in events:
            self._on_event(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(ChannelError("upstream connection closed"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None and not stream.response.done():
                stream.response.set_result(list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.chunks.append((event.data, event.flow_controlled_length))
                stream.consumed.set()
            else:  # a stream we already let go: give the window back to the connection
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream.ended = True
                stream.consumed.set()
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                stream.fail((Refused if refused else ChannelError)(f"stream reset ({event.error_code!r})"))
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self._streams.values() if event.stream_id == 0 else [self._streams.get(event.stream_id)]
            for stream in targets:
                if stream is not None:
                    stream.window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.usable = False
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id in [s for s in self._streams if s > last]:
                self._streams.pop(stream_id).fail(Refused("upstream is going away"))
            if not self._streams and self._transport is not None:
                self._transport.close()

    def _lose(self, error: ChannelError) -> None:
        self.usable = False
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.fail(error)
        self._writable.set()
        if self._transport is not None:
            self._transport.close()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # Streams

    async def open_stream(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> tuple[int, _Stream]:
        if not self.usable:
            raise Refused("connection is not usable")
        request_headers = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", self._authority),
            (b":path", path.encode()),
        ]
        request_headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
        if body:
            request_headers.append((b"content-length", str(len(body)).encode()))
        try:
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, request_headers, end_stream=not body)
        except h2.exceptions.H2Error as exc:  # out of stream ids, or closed under us
            self.usable = False
            raise Refused(str(exc)) from exc
        stream = _Stream(asyncio.get_running_loop())
        self._streams[stream_id] = stream
        try:
            if body:
                await self._send_body(stream_id, stream, body)
            else:
                self._flush()
        except BaseException:
            self.release(stream_id, stream)
            raise
        return stream_id, stream

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        view = memoryview(body)
        while view:
            if stream.error is not None:
                raise stream.error
            window = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            if window <= 0:
                self._flush()
                stream.window_open.clear()
                await stream.window_open.wait()
                continue
            chunk, view = view[:window], view[window:]
            self._h2.send_data(stream_id, chunk.tobytes(), end_stream=not view)
            self._flush()
            if not self._writable.is_set():
                await self._writable.wait()

    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and self.usable:
            with contextlib.suppress(h2.exceptions.H2Error):
                self._h2.acknowledge_received_data(size, stream_id)
            self._flush()

    def release(self, stream_id: int, stream: _Stream) -> None:
        """Lets go of a stream: returns the window of unread data and, if the upstream is
        still sending, tells it to stop (RST_STREAM CANCEL) since nobody will read it."""
        unread = sum(size for _, size in stream.chunks)
        stream.chunks.clear()
        if not self.usable:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            if unread:
                self._h2.acknowledge_received_data(unread, stream_id)
            if self._streams.pop(stream_id, None) is not None:
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            with contextlib.suppress(h2.exceptions.H2Error):
                self._h2.close_connection()
            self._flush()
            self._transport.close()


class Response:
    """An upstream answer whose body is read on demand; closing it early resets the stream."""

    def __init__(
        self, connection: _Connection, stream_id: int, stream: _Stream, headers: list[tuple[bytes, bytes]]
    ):
        self._connection = connection
        self._stream_id = stream_id
        self._stream = stream
        self.status = 0
        self.headers: dict[str, str] = {}
        for name, value in headers:
            if name == b":status":
                self.status = int(value)
            elif not name.startswith(b":"):
                self.headers[name.decode("latin-1")] = value.decode("latin-1")
        self._closed = False

    async def iter_chunks(self, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        stream = self._stream
        while True:
            while stream.chunks:
                data, size = stream.chunks.popleft()
                self._connection.acknowledge(self._stream_id, size)
                if data:
                    yield data
            if stream.error is not None:
                raise stream.error
            if stream.ended:
                return
            stream.consumed.clear()
            async with asyncio.timeout(timeout_s):
                await stream.consumed.wait()

    async def read(self, timeout_s: float | None = None) -> bytes:
        return b"".join([chunk async for chunk in self.iter_chunks(timeout_s)])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._connection.release(self._stream_id, self._stream)


class Channel:
    """Multiplexed HTTP/2 connections to one ``http://host:port`` upstream."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 2.0, max_connections: int = 4) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an h2c upstream needs an http://host:port URL, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._authority = parts.netloc.encode()
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._connections: list[_Connection] = []
        self._connecting: asyncio.Task[_Connection] | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Response:
        """Sends a request and waits for the response head; the body is read from the answer."""
        headers = list(headers)
        try:
            return await self._request_once(method, path, headers, body)
        except Refused:
            # Not processed by the upstream (GOAWAY or REFUSED_STREAM): once more, on a new stream.
            return await self._request_once(method, path, headers, body)

    async def _request_once(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> Response:
        connection = await self._pick()
        stream_id, stream = await connection.open_stream(method, path, headers, body)
        try:
            head = await stream.response
        except BaseException:
            connection.release(stream_id, stream)
            raise
        return Response(connection, stream_id, stream, head)

    async def _pick(self) -> _Connection:
        self._connections = [c for c in self._connections if c.usable]
        if self._connections:
            least = min(self._connections, key=lambda c: c.active)
            if least.active < _STREAMS_PER_CONNECTION or len(self._connections) >= self._max_connections:
                return least
        # One dial at a time: a burst of requests shares it instead of opening a connection each.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._dial())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _dial(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self._authority), self._host, self._port
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to {self._host}:{self._port}: {type(exc).__name__}") from exc
        self._connections.append(protocol)
        return protocol

    async def aclose(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections = []
