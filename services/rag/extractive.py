"""The answer when generation is unavailable: the passages' sentences closest to the question.

Every sentence is copied verbatim from a source and carries that source's ``[n]``, so the
fallback is grounded by construction and its citations are exact.
"""

from __future__ import annotations

from services.rag.lexical import content_words, sentences
from services.rag.retriever import Hit

MAX_SENTENCES = 3
MAX_CHARS = 600
# Only the best-ranked passages: lower ones are less likely to be on topic.
_PASSAGES = 3


def extractive_answer(question: str, sources: list[Hit]) -> str:
    asked = set(content_words(question))
    scored: list[tuple[float, int, int, str]] = []
    for n, hit in enumerate(sources[:_PASSAGES], start=1):
        for position, sentence in enumerate(sentences(hit.text)):
            words = set(content_words(sentence))
            overlap = len(words & asked) / (len(asked) or 1)
            # Rank bonus breaks ties toward the better passage and its earlier sentences.
            scored.append((overlap - 0.01 * n, n, position, sentence))
    if not scored:
        return ""
    best = sorted(scored, key=lambda item: -item[0])[:MAX_SENTENCES]
    # Read in source order, not score order, so the passage flows as written.
    parts: list[str] = []
    used = 0
    for _, n, _, sentence in sorted(best, key=lambda item: (item[1], item[2])):
        if parts and used + len(sentence) > MAX_CHARS:
            break
        clipped = sentence if len(sentence) <= MAX_CHARS else sentence[:MAX_CHARS].rsplit(" ", 1)[0] + "…"
        parts.append(f"{clipped} [{n}]")
        used += len(clipped)
    return " ".join(parts)
