"""The interface every generation backend fills."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class TextDelta:
    text: str
    finish_reason: str | None = None  # set on the last delta: "stop" or "length"
    tokens: int = 1  # completion tokens this delta stands for (0 for a bare finish marker)


class GenerationBackend(Protocol):
    model_id: str
    context_window: int

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens the prompt built from these messages takes."""
        ...

    def generate(
        self, messages: list[dict[str, str]], params: SamplingParams
    ) -> AsyncGenerator[TextDelta, None]:
        """Stream the completion; closing the iterator early stops generation."""
        ...

    async def aclose(self) -> None: ...
