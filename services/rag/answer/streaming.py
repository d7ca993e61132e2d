"""Server-sent events of a streamed answer.

Event order: ``sources`` (the numbered sources the model sees), ``token`` (one verified
sentence each, with its markers; joined they are ``answer``), then ``done`` (the full
answer, its per-sentence report, citations, usage, timings, degraded, safety).
"""

from __future__ import annotations

import json
from typing import Any


def sse_event(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
