"""Redaction on a token stream gives the same text as redacting the whole answer."""

from __future__ import annotations

import json

import pytest

from services.rag.safety import redact
from services.rag.streaming import StreamRedactor, split_closed, sse_event

ANSWERS = [
    "Contact ops@example.com or call (415) 555-0132; card 4111 1111 1111 1111 was used [1].",
    "Write to jane.doe@example.org. Her number is +44 20 7946 0958.",
    "No personal data here, only the gateway on port 8100 [2].",
    "Card 5500005555555559",
]


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_streamed_redaction_equals_whole_redaction(answer: str, size: int) -> None:
    redactor = StreamRedactor(enabled=True)
    sent = [redactor.feed(piece) for piece in _pieces(answer, size)]
    sent.append(redactor.flush())
    assert "".join(sent) == redact(answer).text
    assert sorted(redactor.kinds) == redact(answer).kinds


def test_no_pii_leaks_in_any_prefix_sent() -> None:
    redactor = StreamRedactor(enabled=True)
    sent = ""
    for piece in _pieces("call 415 555 0132 now", 1):
        sent += redactor.feed(piece)
        assert "0132" not in sent and "555" not in sent
    assert sent + redactor.flush() == "call [phone redacted] now"


def test_disabled_redactor_passes_text_through() -> None:
    redactor = StreamRedactor(enabled=False)
    assert redactor.feed("a@b.co ") == "a@b.co "
    assert redactor.flush() == ""


def test_split_falls_on_whitespace() -> None:
    assert split_closed("Hello world") == len("Hello ")
    assert split_closed("call 555 123") == len("call ")
    assert split_closed("abc1 234") == 0


def test_sse_event_format() -> None:
    event = sse_event("token", {"text": "hi\nthere"})
    assert event.startswith("event: token\ndata: ")
    assert event.endswith("\n\n")
    assert json.loads(event.split("data: ", 1)[1]) == {"text": "hi\nthere"}
