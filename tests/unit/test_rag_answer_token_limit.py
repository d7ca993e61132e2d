"""The max_tokens limit: the LLM's cap as read, lowered by rag's setting, kept through failed reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.common.errors import APIError
from services.rag.answer import token_limit
from services.rag.answer.llm_client import GenerationUnavailable
from services.rag.answer.token_limit import TokenLimit


class Card:
    """A fake /v1/models read: answers ``cap`` or fails, and counts its calls."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.down = False
        self.reads = 0

    async def read(self) -> int | None:
        self.reads += 1
        if self.down:
            raise GenerationUnavailable("llm unreachable")
        return self.cap


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    # The module's own clock only: the event loop keeps the real one.
    monkeypatch.setattr(token_limit, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.mark.parametrize(
    ("cap", "configured", "limit"), [(512, None, 512), (512, 100, 100), (None, 100, 100)]
)
async def test_the_limit_is_the_smaller_of_the_llms_cap_and_the_setting(
    cap: int | None, configured: int | None, limit: int
) -> None:
    assert await TokenLimit(Card(cap).read, configured).current() == limit


async def test_over_the_limit_is_a_422_naming_it() -> None:
    limit = TokenLimit(Card(512).read, None)
    assert await limit.check(512) == 512
    assert await limit.check(None) == 512
    with pytest.raises(APIError) as refused:
        await limit.check(513)
    assert (refused.value.status, refused.value.code) == (422, "max_tokens_too_large")
    assert refused.value.message == "max_tokens 513 is over the limit of 512"


async def test_the_cap_is_read_again_after_a_while_and_kept_through_a_failed_read(clock: list[float]) -> None:
    card = Card(512)
    limit = TokenLimit(card.read, None)
    assert await limit.current() == 512
    assert await limit.current() == 512 and card.reads == 1  # trusted for REFRESH_S
    card.cap = 256
    clock[0] += token_limit.REFRESH_S
    assert await limit.current() == 256 and card.reads == 2  # the LLM was redeployed
    card.down = True
    clock[0] += token_limit.REFRESH_S
    assert await limit.current() == 256  # the last known cap stands
    assert await limit.current() == 256 and card.reads == 3  # no read again before RETRY_S
    clock[0] += token_limit.RETRY_S
    await limit.current()
    assert card.reads == 4


async def test_unknown_without_an_llm_or_a_setting() -> None:
    card = Card(512)
    card.down = True
    limit = TokenLimit(card.read, None)
    assert await limit.check(2048) is None  # unchecked: the LLM, once back, refuses over its cap
