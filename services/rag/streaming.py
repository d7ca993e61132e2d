"""Server-sent events of a streamed answer, and redaction that works on a token stream.

Event order: ``sources`` (the numbered sources the model sees), ``token`` (answer
text as it is generated), then ``done`` (the full answer, the citations it used,
usage, timings, degraded, safety).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from services.rag.safety import redact

# A trailing run that may still grow into something redact() would mask: digits and
# separators (phone, card numbers), then the last, possibly unfinished, word (emails).
_OPEN_TAIL_RE: Final = re.compile(r"[\d\s().+\-]*\S*\Z")


def sse_event(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def split_closed(text: str) -> int:
    """Index where the text's still-open tail begins; everything before it is final.

    The boundary always falls on whitespace, so no email, phone or card number can
    straddle it: each side is redacted on its own with the same result as the whole.
    """
    match = _OPEN_TAIL_RE.search(text)
    start = match.start() if match else len(text)
    while start < len(text) and text[start].isspace():
        start += 1
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return start


class StreamRedactor:
    """Feeds on generated deltas; gives back text that is safe to send now, already redacted."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._pending = ""
        self.kinds: set[str] = set()

    def feed(self, delta: str) -> str:
        if not self._enabled:
            return delta
        self._pending += delta
        cut = split_closed(self._pending)
        closed, self._pending = self._pending[:cut], self._pending[cut:]
        return self._redact(closed)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return self._redact(rest) if self._enabled else rest

    def _redact(self, text: str) -> str:
        if not text:
            return ""
        result = redact(text)
        self.kinds.update(result.kinds)
        return result.text
