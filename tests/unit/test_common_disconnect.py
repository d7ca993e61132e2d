"""``cancel_when``: the call is cancelled when the client leaves first, and with
``watch_after_s`` the watch is started only for a call that takes that long."""

from __future__ import annotations

import asyncio

import pytest

from services.common.disconnect import ClientDisconnected, cancel_when


class _Client:
    """A stand-in for a server's "has the client left" watch, counting how often it is started."""

    def __init__(self) -> None:
        self.left = asyncio.Event()
        self.watches = 0

    async def gone(self) -> None:
        self.watches += 1
        await self.left.wait()


async def test_a_quick_call_never_starts_a_late_watch() -> None:
    client = _Client()
    assert await cancel_when(client.gone, asyncio.sleep(0, "answer"), watch_after_s=0.05) == "answer"
    await asyncio.sleep(0.1)  # past the delay: the timer was cancelled with the call
    assert client.watches == 0


async def test_without_a_delay_the_watch_starts_at_once() -> None:
    client = _Client()
    assert await cancel_when(client.gone, asyncio.sleep(0, "answer")) == "answer"
    assert client.watches == 1


async def test_a_slow_call_is_watched_and_cancelled_when_the_client_leaves() -> None:
    client = _Client()
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    async def leave_later() -> None:
        await asyncio.sleep(0.1)
        client.left.set()

    leaving = asyncio.ensure_future(leave_later())
    with pytest.raises(ClientDisconnected):
        await cancel_when(client.gone, slow(), watch_after_s=0.02)
    await leaving
    assert client.watches == 1 and cancelled.is_set()


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    client = _Client()
    task = asyncio.ensure_future(cancel_when(client.gone, asyncio.sleep(10), watch_after_s=0.01))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.watches == 1
