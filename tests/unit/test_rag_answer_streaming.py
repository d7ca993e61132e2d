"""The server-sent event format."""

from __future__ import annotations

import json

from services.rag.answer.streaming import sse_event


def test_sse_event_format() -> None:
    event = sse_event("token", {"text": "hi\nthere"})
    assert event.startswith("event: token\ndata: ")
    assert event.endswith("\n\n")
    assert json.loads(event.split("data: ", 1)[1]) == {"text": "hi\nthere"}
