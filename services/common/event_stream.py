"""How a service's OpenAPI documents a ``text/event-stream`` answer."""

from __future__ import annotations

from typing import Any, Final

# One schema per event, not per body: an event is read as {event, data, id, retry}
# (OpenAPI 3.2's server-sent events), so a plain string would describe none of them.
SSE_EVENT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "description": "sources, token or done"},
        "data": {"type": "string", "description": "the event's JSON object"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

EVENT_STREAM: Final[dict[str, Any]] = {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}
