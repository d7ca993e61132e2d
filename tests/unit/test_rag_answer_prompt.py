"""Sources within the token budget, numbered, and the instruction to cite them."""

from __future__ import annotations

from services.rag.answer.prompt import build_messages, estimate_tokens, select_sources
from services.rag.retrieval.retriever import Hit


def _hit(n: int, text: str) -> Hit:
    return Hit(f"c{n}", f"d{n}", 0, text, f"Title {n}", f"d{n}.md", {}, 1.0 / n)


def test_sources_stop_at_the_budget_but_keep_at_least_one() -> None:
    hits = [_hit(n, "word " * 100) for n in range(1, 6)]  # ~125 tokens each
    cost = estimate_tokens("Title 1") + estimate_tokens("word " * 100) + 4
    assert [h.chunk_id for h in select_sources(hits, cost * 2)] == ["c1", "c2"]
    assert [h.chunk_id for h in select_sources(hits, 1)] == ["c1"]


def test_messages_number_the_sources_and_ask_for_citations() -> None:
    messages = build_messages("Why?", [_hit(1, "Alpha."), _hit(2, "Beta.")])
    assert messages[0]["role"] == "system" and "[1]" in messages[0]["content"]
    user = messages[1]["content"]
    assert "[1] Title 1\nAlpha." in user and "[2] Title 2\nBeta." in user
    assert user.endswith("Question: Why?\nAnswer:")
