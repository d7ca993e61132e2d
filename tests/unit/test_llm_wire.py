"""Pure pieces of the LLM service: OpenAI chunk shape, message content parts, cost arithmetic."""

from __future__ import annotations

import json

import pytest

from services.llm.metrics import Prices
from services.llm.schemas import ChatCompletionChunk, ChatMessage, ChunkChoice, DeltaMessage, TextPart


def test_delta_carries_only_what_it_has() -> None:
    chunk = ChatCompletionChunk(
        id="chatcmpl-1", created=1, model="m", choices=[ChunkChoice(delta=DeltaMessage(content="hi"))]
    )
    choice = json.loads(chunk.model_dump_json())["choices"][0]
    assert choice == {"index": 0, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None}
    last = ChunkChoice(delta=DeltaMessage(), finish_reason="stop")
    assert json.loads(last.model_dump_json())["delta"] == {}


def test_content_parts_join_into_text() -> None:
    message = ChatMessage(
        role="user", content=[TextPart(type="text", text="a"), TextPart(type="text", text="b")]
    )
    assert message.text() == "ab"
    assert ChatMessage(role="assistant", content=None).text() == ""


@pytest.mark.parametrize(
    ("prompt", "completion", "expected"),
    [(1000, 0, 0.5), (0, 1000, 1.5), (200, 100, 0.25), (0, 0, 0.0)],
)
def test_cost_from_prices_per_thousand(prompt: int, completion: int, expected: float) -> None:
    assert Prices(per_1k_prompt=0.5, per_1k_completion=1.5).cost(prompt, completion) == pytest.approx(
        expected
    )
