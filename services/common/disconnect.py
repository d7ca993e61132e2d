"""Cancels a handler's work (an upstream call, a generation) when its client goes away first."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client left before the answer was ready; its work was cancelled."""


async def _disconnected(request: Request) -> None:
    # Called once the body is read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, call: Coroutine[Any, Any, T]) -> T:
    """Awaits ``call``; if the client disconnects first, cancels it and raises ClientDisconnected."""
    work = asyncio.ensure_future(call)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        watch.cancel()
    if work.done():
        return work.result()
    work.cancel()
    await asyncio.wait((work,))
    raise ClientDisconnected
