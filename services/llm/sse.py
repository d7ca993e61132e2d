"""A server-sent events response that owns its generation: both end when the response does."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.llm.admission import Lease


class EventStreamResponse(StreamingResponse):
    def __init__(self, events: AsyncGenerator[str, None], lease: Lease) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self._events = events
        self._lease = lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A client that left mid-stream (or before it began) stops its generation now,
            # instead of whenever the abandoned generator is collected.
            await self._events.aclose()
            self._lease.release()
