"""A lean HTTP/2 cleartext client for the gateway's upstream hop.

The gateway relays every request, so its client sits on the hot path twice (request and
answer). httpx/httpcore pay a pool, a lock and several objects per request, and send no
RST_STREAM when a caller gives up on a stream, so an abandoned upstream call kept running.
The ``h2`` state machine fixed that but still cost the gateway about 0.75 ms of CPU per
request, most of it validating and HPACK-encoding headers the gateway wrote itself
(docs/benchmarks.md, "Gateway").

So this client frames HTTP/2 (RFC 9113) itself, for the one role it has: a client that
sends a request and reads its answer. It keeps one or a few multiplexed connections per
upstream, writes a whole request in one ``transport.write``, encodes its own headers as
literals that never touch the dynamic table (nothing to keep in sync), decodes answers
with ``hpack``, keeps flow control both ways, and resets a stream the moment its reader
closes it early: a client leaving the gateway stops the upstream work too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import cast
from urllib.parse import urlsplit

import hpack

# A stream whose reader keeps up never waits for a WINDOW_UPDATE; the window refills as
# the reader takes chunks, so a slow client still pushes back on the upstream.
_WINDOW = 16 * 1024 * 1024
# Open another connection when every open one carries this many streams (up to the cap).
_STREAMS_PER_CONNECTION = 64
_MAX_STREAM_ID = 2**31 - 1
_DEFAULT_WINDOW = 65_535

# Frame types and flags (RFC 9113, section 6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE = 0x0, 0x1, 0x2, 0x3, 0x4, 0x5
_PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0x6, 0x7, 0x8, 0x9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_SETTINGS_ENABLE_PUSH, _SETTINGS_MAX_CONCURRENT_STREAMS = 0x2, 0x3
_SETTINGS_INITIAL_WINDOW_SIZE, _SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5
_NO_ERROR, _REFUSED_STREAM, _CANCEL = 0x0, 0x7, 0x8

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HPACK static table indices (RFC 7541, appendix A) of the names a request uses.
_STATIC_NAMES = {b":authority": 1, b":method": 2, b":path": 4, b":scheme": 6}
_STATIC_NAMES |= {b"content-length": 28, b"content-type": 31}
# First in every header block: a dynamic table size update to 0. This side never indexes,
# so whatever table size the upstream allows, the encoder's table is within it.
_TABLE_SIZE_ZERO = b"\x20"
_INDEXED_SCHEME_HTTP = b"\x86"
_FORBIDDEN_IN_VALUES = (b"\r", b"\n", b"\x00")


class ChannelError(Exception):
    """The upstream could not be reached or dropped the stream."""


class ConnectFailed(ChannelError):
    """No connection could be opened: the request never left."""


class Refused(ChannelError):
    """The upstream refused the stream before processing it (GOAWAY, REFUSED_STREAM): safe to resend."""


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing (RFC 7541, 6.2.2), no Huffman coding."""
    if any(c in value for c in _FORBIDDEN_IN_VALUES):
        raise ValueError(f"header {name!r} has a forbidden character in its value")
    index = _STATIC_NAMES.get(name)
    head = _hpack_int(index, 4) if index else b"\x00" + _hpack_int(len(name), 7) + name
    return head + _hpack_int(len(value), 7) + value


class _Stream:
    __slots__ = (
        "chunks",
        "consumed",
        "ended",
        "error",
        "response",
        "send_window",
        "unacked",
        "window_open",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, send_window: int) -> None:
        self.response: asyncio.Future[list[tuple[bytes, bytes]]] = loop.create_future()
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.consumed: asyncio.Event = asyncio.Event()  # set whenever chunks arrive or it ends
        self.window_open: asyncio.Event = asyncio.Event()
        self.ended = False
        self.error: ChannelError | None = None
        self.send_window = send_window
        self.unacked = 0  # bytes read but not yet given back to the upstream's window

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
        self._authority = _literal(b":authority", authority)
        self._decoder = hpack.Decoder()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._header_block: tuple[int, int, bytearray] | None = None  # stream, flags, block so far
        # What the upstream allows us (its SETTINGS and WINDOW_UPDATEs).
        self._send_window = _DEFAULT_WINDOW
        self._stream_window = _DEFAULT_WINDOW
        self._max_frame = 16_384
        self._max_streams = 2**31
        self._unacked = 0  # connection-level bytes read but not yet given back
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
        settings = b"".join(
            key.to_bytes(2, "big") + value.to_bytes(4, "big")
            for key, value in (
                (_SETTINGS_ENABLE_PUSH, 0),
                (_SETTINGS_INITIAL_WINDOW_SIZE, _WINDOW),
                (_SETTINGS_MAX_CONCURRENT_STREAMS, 1000),
            )
        )
        self._out += (
            _PREFACE,
            _frame(_SETTINGS, 0, 0, settings),
            _frame(_WINDOW_UPDATE, 0, 0, _WINDOW.to_bytes(4, "big")),
        )
        self._flush()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset, size = 0, len(buffer)
        try:
            while size - offset >= 9:
                length = int.from_bytes(buffer[offset : offset + 3], "big")
                end = offset + 9 + length
                if end > size:
                    break
                kind, flags = buffer[offset + 3], buffer[offset + 4]
                stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & _MAX_STREAM_ID
                self._on_frame(kind, flags, stream_id, bytes(buffer[offset + 9 : end]))
                offset = end
        except (ChannelError, hpack.HPACKError, IndexError, ValueError) as exc:
            self._lose(ChannelError(f"protocol error: {exc}"))
            return
        del buffer[:offset]
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(ChannelError("upstream connection closed"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # Frames from the upstream

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._header_block is not None and kind != _CONTINUATION:
            raise ChannelError("header block interrupted")
        if kind == _DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == _HEADERS:
            if flags & _PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & _PRIORITY_FLAG:
                payload = payload[5:]
            self._header_block = (stream_id, flags, bytearray(payload))
            if flags & _END_HEADERS:
                self._on_header_block()
        elif kind == _CONTINUATION:
            if self._header_block is None or self._header_block[0] != stream_id:
                raise ChannelError("unexpected CONTINUATION")
            self._header_block[2].extend(payload)
            if flags & _END_HEADERS:
                self._on_header_block()
        elif kind == _RST_STREAM:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                code = int.from_bytes(payload[:4], "big")
                refused = code == _REFUSED_STREAM
                stream.fail((Refused if refused else ChannelError)(f"stream reset (error code {code})"))
                self._close_if_done()
        elif kind == _SETTINGS:
            if not flags & _ACK:
                self._on_settings(payload)
        elif kind == _PING:
            if not flags & _ACK:
                self._out.append(_frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            self._on_goaway(int.from_bytes(payload[:4], "big") & _MAX_STREAM_ID)
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream_id, int.from_bytes(payload[:4], "big") & _MAX_STREAM_ID)
        elif kind == _PUSH_PROMISE:
            raise ChannelError("PUSH_PROMISE after push was disabled")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        flow_controlled = len(payload)
        if flags & _PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        stream = self._streams.get(stream_id)
        if stream is None:  # a stream we already let go: give the window back to the connection
            self._acknowledge_connection(flow_controlled)
            return
        stream.chunks.append((payload, flow_controlled))
        if flags & _END_STREAM:
            self._end(stream_id, stream)
        stream.consumed.set()

    def _on_header_block(self) -> None:
        assert self._header_block is not None
        stream_id, flags, block = self._header_block
        self._header_block = None
        # Decoded even for a stream let go: the decoder's table must see every block.
        headers = cast(list[tuple[bytes, bytes]], self._decoder.decode(bytes(block), raw=True))
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not stream.response.done():  # the head; a later block is trailers, not passed on
            status = next((value for name, value in headers if name == b":status"), b"")
            if status.startswith(b"1") and not flags & _END_STREAM:
                return  # informational (100 Continue, 103 Early Hints): the answer follows
            stream.response.set_result(headers)
        if flags & _END_STREAM:
            self._end(stream_id, stream)
            stream.consumed.set()

    def _on_settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                if value > _MAX_STREAM_ID:
                    raise ChannelError("initial window too large")
                delta, self._stream_window = value - self._stream_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
                    stream.window_open.set()
            elif key == _SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value
            elif key == _SETTINGS_MAX_CONCURRENT_STREAMS:
                self._max_streams = value
        self._out.append(_frame(_SETTINGS, _ACK, 0))

    def _on_goaway(self, last_stream_id: int) -> None:
        self.usable = False
        for stream_id in [s for s in self._streams if s > last_stream_id]:
            self._streams.pop(stream_id).fail(Refused("upstream is going away"))
        self._close_if_done()

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self._send_window += increment
            for waiting in self._streams.values():
                waiting.window_open.set()
        elif (stream := self._streams.get(stream_id)) is not None:
            stream.send_window += increment
            stream.window_open.set()

    def _end(self, stream_id: int, stream: _Stream) -> None:
        stream.ended = True
        self._streams.pop(stream_id, None)
        self._close_if_done()

    def _close_if_done(self) -> None:
        if not self.usable and not self._streams and self._transport is not None:
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
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _flush_soon(self) -> None:
        # Requests queued in the same loop turn leave in one write (one syscall under load).
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    # Streams

    async def open_stream(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> tuple[int, _Stream]:
        if not self.usable:
            raise Refused("connection is not usable")
        if len(self._streams) >= self._max_streams or self._next_stream_id > _MAX_STREAM_ID:
            raise Refused("no stream available on this connection")
        block = [
            _TABLE_SIZE_ZERO,
            _literal(b":method", method.encode()),
            _INDEXED_SCHEME_HTTP,
            self._authority,
            _literal(b":path", path.encode()),
        ]
        try:
            block += [_literal(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
        except (UnicodeEncodeError, ValueError) as exc:
            raise ChannelError(f"header not sendable: {exc}") from exc
        if body:
            block.append(_literal(b"content-length", str(len(body)).encode()))
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        stream = _Stream(asyncio.get_running_loop(), self._stream_window)
        self._streams[stream_id] = stream
        self._queue_headers(stream_id, b"".join(block), end_stream=not body)
        try:
            if body:
                await self._send_body(stream_id, stream, body)
            else:
                self._flush_soon()
        except BaseException:
            self.release(stream_id, stream)
            raise
        return stream_id, stream

    def _queue_headers(self, stream_id: int, block: bytes, *, end_stream: bool) -> None:
        size = self._max_frame
        first, rest = block[:size], block[size:]
        flags = (_END_STREAM if end_stream else 0) | (0 if rest else _END_HEADERS)
        self._out.append(_frame(_HEADERS, flags, stream_id, first))
        while rest:
            piece, rest = rest[:size], rest[size:]
            self._out.append(_frame(_CONTINUATION, 0 if rest else _END_HEADERS, stream_id, piece))

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        view = memoryview(body)
        while view:
            if stream.error is not None:
                raise stream.error
            if stream.ended:  # answered before the whole body went: the rest is not wanted
                return
            window = min(self._send_window, stream.send_window, self._max_frame)
            if window <= 0:
                self._flush()
                stream.window_open.clear()
                await stream.window_open.wait()
                continue
            chunk, view = view[:window], view[window:]
            self._send_window -= len(chunk)
            stream.send_window -= len(chunk)
            self._out.append(_frame(_DATA, 0 if view else _END_STREAM, stream_id, chunk.tobytes()))
            if not view:
                self._flush_soon()
                return
            self._flush()
            if not self._writable.is_set():
                await self._writable.wait()

    def _acknowledge_connection(self, size: int) -> None:
        self._unacked += size
        if self._unacked >= _WINDOW // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, self._unacked.to_bytes(4, "big")))
            self._unacked = 0

    def acknowledge(self, stream_id: int, stream: _Stream, size: int) -> None:
        """Gives ``size`` read bytes back to the upstream's windows, in batches of half a window."""
        if not size:
            return
        self._acknowledge_connection(size)
        if not stream.ended:
            stream.unacked += size
            if stream.unacked >= _WINDOW // 2:
                self._out.append(_frame(_WINDOW_UPDATE, 0, stream_id, stream.unacked.to_bytes(4, "big")))
                stream.unacked = 0
        self._flush()

    def release(self, stream_id: int, stream: _Stream) -> None:
        """Lets go of a stream: returns the window of unread data and, if the upstream is
        still sending, tells it to stop (RST_STREAM CANCEL) since nobody will read it."""
        unread = sum(size for _, size in stream.chunks)
        stream.chunks.clear()
        if unread:
            self._acknowledge_connection(unread)
        if self._streams.pop(stream_id, None) is not None:
            self._out.append(_frame(_RST_STREAM, 0, stream_id, _CANCEL.to_bytes(4, "big")))
        self._flush()

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            # Last stream id 0: this side accepts no streams from the upstream (no push).
            self._out.append(_frame(_GOAWAY, 0, 0, bytes(4) + _NO_ERROR.to_bytes(4, "big")))
            with contextlib.suppress(OSError, RuntimeError):
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
                self._connection.acknowledge(self._stream_id, stream, size)
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
