"""Reads how many tokens a rag answer spent, from a JSON body or from an SSE stream.

Cached answers spent no model tokens, so they count as zero against a quota.
"""

from __future__ import annotations

from typing import Any

import orjson

_EVENT_END = b"\n\n"


def tokens_spent(answer: Any) -> int:
    if not isinstance(answer, dict) or answer.get("cached") is True:
        return 0
    usage = answer.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and total > 0 else 0


def tokens_in_body(body: bytes) -> int:
    try:
        return tokens_spent(orjson.loads(body))  # every answer is read: orjson's speed counts
    except orjson.JSONDecodeError:
        return 0


class DoneEventTap:
    """Watches an SSE byte stream for rag's final ``done`` event; the bytes pass on untouched.

    Only the current, unfinished event is held, never the whole stream.
    """

    def __init__(self) -> None:
        self._pending = b""
        self.tokens = 0

    def feed(self, chunk: bytes) -> None:
        search_from = max(0, len(self._pending) - 1)  # a separator may straddle two chunks
        self._pending += chunk
        while (end := self._pending.find(_EVENT_END, search_from)) != -1:
            self._inspect(self._pending[:end])
            self._pending = self._pending[end + len(_EVENT_END) :]
            search_from = 0

    def _inspect(self, event: bytes) -> None:
        lines = event.replace(b"\r\n", b"\n").split(b"\n")
        if b"event: done" not in lines:
            return
        data = b"\n".join(line[5:].lstrip(b" ") for line in lines if line.startswith(b"data:"))
        self.tokens += tokens_in_body(data)
