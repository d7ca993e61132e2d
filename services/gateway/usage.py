"""Reads how many tokens a rag answer spent, from a JSON body or from an SSE stream.

Cached answers spent no model tokens, so they count as zero against a quota.
"""

from __future__ import annotations

import orjson
from httpx2 import ServerSentEvent


def tokens_in_body(body: bytes | str) -> int:
    try:
        answer = orjson.loads(body)  # every answer is read: orjson's speed counts
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(answer, dict) or answer.get("cached") is True:
        return 0
    usage = answer.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and total > 0 else 0


class DoneEvents:
    """Reads the tokens of rag's final ``done`` event as a relayed stream's events pass."""

    def __init__(self) -> None:
        self.tokens: int | None = None  # None: no done event came

    def feed(self, event: ServerSentEvent) -> None:
        if event.event == "done":
            self.tokens = tokens_in_body(event.data)
