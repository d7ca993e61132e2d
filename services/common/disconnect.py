"""Cancels a handler's work (an upstream call, a generation) when its client goes away first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")

# Nginx's "client closed request": nobody reads it, but logs and metrics do.
CLIENT_CLOSED_REQUEST = 499


class ClientDisconnected(Exception):
    """The client left before the answer was ready; its work was cancelled."""


async def disconnected(request: Request) -> None:
    """Ends when the client of ``request``, whose body is read, has left."""
    # Called once the body is read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, call: Awaitable[T]) -> T:
    """Awaits ``call``; if the client disconnects first, cancels it and raises ClientDisconnected."""
    return await cancel_when(lambda: disconnected(request), call)


async def cancel_when(
    gone: Callable[[], Coroutine[Any, Any, None]], call: Awaitable[T], *, watch_after_s: float = 0.0
) -> T:
    """Awaits ``call``; if the watch ``gone()`` (the client's leaving) ends first, cancels
    ``call`` and raises ClientDisconnected.

    A coroutine ``call`` runs in the caller's task and only the watch gets a task of its own. A
    task ``call`` is cancelled with the caller. ``watch_after_s`` starts the watch only once
    ``call`` has taken that long, so a quick answer (a cached one) needs no watch task at all.
    """
    task = asyncio.current_task()
    assert task is not None
    settled = False
    left = False

    def on_watch_done(watch: asyncio.Future[None]) -> None:
        nonlocal left
        # A callback already queued when ``call`` returned must not cancel what comes after.
        if not settled and not watch.cancelled() and watch.exception() is None:
            left = True
            task.cancel()

    watch: asyncio.Future[None] | None = None

    def start_watch() -> None:
        nonlocal watch
        watch = asyncio.ensure_future(gone())
        watch.add_done_callback(on_watch_done)

    timer = asyncio.get_running_loop().call_later(watch_after_s, start_watch) if watch_after_s > 0 else None
    if timer is None:
        start_watch()
    try:
        return await call
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # cancelled for the disconnect, not from outside
            raise ClientDisconnected from None
        raise
    finally:
        settled = True
        if timer is not None:
            timer.cancel()
        if watch is not None:
            watch.cancel()
