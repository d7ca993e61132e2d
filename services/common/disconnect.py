"""Cancels a handler's work (an upstream call, a generation) when its client goes away first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

T = TypeVar("T")

# Nginx's "client closed request": nobody reads it, but logs and metrics do.
CLIENT_CLOSED_REQUEST = 499


class ClientDisconnected(Exception):
    """The client left before the answer was ready; its work was cancelled."""


async def _disconnected(request: Request) -> None:
    # Called once the body is read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, call: Awaitable[T]) -> T:
    """Awaits ``call``; if the client disconnects first, cancels it and raises ClientDisconnected.

    A coroutine ``call`` runs in the caller's task and only the watch gets a task of its own:
    one task per request less, on every relayed request of the gateway. A task ``call`` is
    cancelled with the caller.
    """
    task = asyncio.current_task()
    assert task is not None
    settled = False
    gone = False

    def on_watch_done(watch: asyncio.Future[None]) -> None:
        nonlocal gone
        # A callback already queued when ``call`` returned must not cancel what comes after.
        if not settled and not watch.cancelled() and watch.exception() is None:
            gone = True
            task.cancel()

    watch = asyncio.ensure_future(_disconnected(request))
    watch.add_done_callback(on_watch_done)
    try:
        return await call
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:  # cancelled for the disconnect, not from outside
            raise ClientDisconnected from None
        raise
    finally:
        settled = True
        watch.cancel()
