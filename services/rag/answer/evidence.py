"""The sentences of the retrieved sources, and their vectors: what answers are checked against.

Chunks end on sentence boundaries at ingest, so every sentence here is whole and can
be quoted verbatim. Sentence vectors come from the embedder, in one call for all the
sentences not already known; a bounded in-process cache keeps the vectors of sentences
seen recently, since popular passages come back query after query.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from services.common.sentences import is_heading, normalise_space, split_sentences
from services.rag import rag_metrics
from services.rag.retrieval.retriever import Hit

Vectors = npt.NDArray[np.float32]
Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


_PRONOUNS: Final = frozenset({"it", "its", "they", "their", "this", "these", "that", "those", "he", "she"})


@dataclass(frozen=True)
class SourceSentence:
    n: int  # the source's number, as cited: [n]
    position: int  # order within its source
    text: str  # whitespace-normalised, verbatim otherwise
    label: str  # the source's title and the heading above the sentence
    antecedent: str  # the sentence before, when this one opens with a pronoun ("It ...")

    @property
    def context(self) -> str:
        return " ".join(part for part in (self.label, self.antecedent) if part)

    @property
    def statement(self) -> str:
        """What the sentence says, its pronoun resolved by the sentence before."""
        return f"{self.antecedent} {self.text}" if self.antecedent else self.text

    @property
    def embedded(self) -> str:
        """What is embedded: the sentence read in its context ("The LLM service: It runs ...")."""
        return f"{self.context}: {self.text}" if self.context else self.text

    @property
    def opens_with_pronoun(self) -> bool:
        return opens_with_pronoun(self.text)


def opens_with_pronoun(text: str) -> bool:
    words = text.split(maxsplit=1)
    return bool(words) and words[0].casefold().strip(",") in _PRONOUNS


def source_sentences(sources: list[Hit]) -> list[SourceSentence]:
    found: list[SourceSentence] = []
    for n, hit in enumerate(sources, start=1):
        previous = heading = ""
        for raw in split_sentences(hit.text):
            text = normalise_space(raw)
            if is_heading(text):
                heading, previous = text.lstrip("#").strip(), ""
                continue
            antecedent = previous if opens_with_pronoun(text) else ""
            label = " ".join(part for part in (hit.title, heading) if part)
            found.append(SourceSentence(n, len(found), text, label, antecedent))
            previous = text
    return found


class SentenceVectors:
    """Normalised sentence vectors, from a bounded LRU cache or the embedder."""

    def __init__(self, embed: Embed, capacity: int) -> None:
        self._embed = embed
        self._capacity = capacity
        self._cache: OrderedDict[str, Vectors] = OrderedDict()

    async def of(self, texts: list[str]) -> Vectors:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        rag_metrics.SENTENCE_VECTORS.labels("embedded").inc(len(missing))
        rag_metrics.SENTENCE_VECTORS.labels("cached").inc(len(texts) - len(missing))
        fresh = dict(zip(missing, await self._embed(missing), strict=True)) if missing else {}
        rows: list[Vectors] = []
        for text in texts:
            vector = self._cache.get(text)
            if vector is None:
                vector = np.asarray(fresh[text], dtype=np.float32)
            self._remember(text, vector)
            rows.append(vector)
        return np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def _remember(self, text: str, vector: Vectors) -> None:
        if self._capacity <= 0:
            return
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
