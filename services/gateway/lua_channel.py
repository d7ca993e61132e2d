"""One pipelined Redis connection that runs one Lua script: the gateway's admission.

Every request from a known key runs the admission script once (admission.py). Through
redis-py's asyncio client that one EVALSHA cost the gateway about 0.35 ms of CPU per
request: pool checkout, the retry wrapper, command packing and the parser's plumbing
(docs/benchmarks.md, "Gateway"). Here the calls share one connection, written back to
back without waiting, and their replies (parsed by hiredis, redis-py's own C parser) are
handed to the callers in order, as Redis answers them.

Failures are redis-py's exceptions, so the gateway's StoreBreaker treats them as before.
A timeout or a lost connection fails every call in flight on it (their replies can no
longer be told apart), and the next call connects afresh: the gateway recovers by itself
once Redis is back.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def supports(redis_url: str) -> bool:
    """Plain ``redis://`` only; TLS, sockets, sentinel and cluster stay with redis-py."""
    return urlsplit(redis_url).scheme == "redis"


def _command(*args: bytes | str | int | float) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, float):
            value = repr(arg).encode()
        else:
            value = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self._reader = hiredis.Reader()
        self._timeout_s = timeout_s
        # Callers in the order Redis answers them, with when each must have its reply.
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter, _ = self._pending.popleft()
                if not waiter.done():  # a caller that gave up still had its reply in line
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            self.close(RedisConnectionError(f"unexpected reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisConnectionError("connection to Redis lost"))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Queues ``command``; its reply (or a RedisError) arrives on the returned future."""
        if not self.open or self._transport is None:
            raise RedisConnectionError("connection to Redis is closed")
        waiter = self._loop.create_future()
        self._pending.append((waiter, self._loop.time() + self._timeout_s))
        if not self._out:  # the first of this loop turn: the others join its write
            self._loop.call_soon(self._flush)
        self._out.append(command)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(self._pending[0][1], self._watch)
        return waiter

    def _flush(self) -> None:
        if self._out and self.open and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _watch(self) -> None:
        # One timer per connection rather than one per call: replies come in order, so only
        # the oldest call in line can be overdue.
        self._watchdog = None
        if not self._pending:
            return
        deadline = self._pending[0][1]
        if deadline <= self._loop.time():
            # Later replies on this connection would go to the wrong callers: drop it.
            self.close(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._watch)

    def close(self, error: Exception) -> None:
        self.open = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self._pending = self._pending, deque()
        for waiter, _ in pending:
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: its caller may be gone
        if self._transport is not None:
            self._transport.close()


class LuaChannel:
    """Runs ``script`` (EVALSHA, loading it on NOSCRIPT) over one pipelined connection."""

    def __init__(self, redis_url: str, script: bytes, *, timeout_s: float) -> None:
        if not supports(redis_url):
            raise ValueError(f"LuaChannel takes a redis:// URL, not {redis_url!r}")
        parts = urlsplit(redis_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self._db = int(path) if path else 0
        self._script = script
        self._sha = hashlib.sha1(script).hexdigest().encode()
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[int | float | str]) -> Any:
        try:
            return await self._run(keys, args)
        except RedisConnectionError:
            # Once more on a new connection: the old one may predate a Redis restart.
            return await self._run(keys, args)

    async def _run(self, keys: Sequence[str], args: Sequence[int | float | str]) -> Any:
        connection = await self._connected()
        reply = await connection.send(_command(b"EVALSHA", self._sha, len(keys), *keys, *args))
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = await connection.send(_command(b"EVAL", self._script, len(keys), *keys, *args))
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def _connected(self) -> _Connection:
        if self._connection is not None and self._connection.open:
            return self._connection
        # One dial at a time: a burst of callers shares it.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._dial())
        self._connection = await asyncio.shield(self._connecting)
        return self._connection

    async def _dial(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._timeout_s), self._host, self._port
                )
                setup = []
                if self._password is not None:
                    auth = [self._username, self._password] if self._username else [self._password]
                    setup.append(connection.send(_command(b"AUTH", *auth)))
                if self._db:
                    setup.append(connection.send(_command(b"SELECT", self._db)))
                refusals = [r for r in await asyncio.gather(*setup) if isinstance(r, hiredis.ReplyError)]
            if refusals:
                raise RedisConnectionError(f"Redis refused the connection setup: {refusals[0]}")
        except (OSError, TimeoutError, RedisConnectionError) as exc:
            if connection is not None:
                connection.close(RedisConnectionError("connection setup failed"))
            if isinstance(exc, RedisConnectionError):
                raise
            raise RedisConnectionError(f"cannot connect to Redis at {self._host}:{self._port}") from exc
        return connection

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close(RedisConnectionError("channel closed"))
            self._connection = None
