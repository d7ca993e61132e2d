"""The text BM25 scores: a chunk's title and words, lowercased, stop words dropped, stemmed.

Ingest writes it into the collection's ``lexical`` field and rag puts a query through the
same function, so both sides always match. Doing it here rather than in a Milvus analyzer
gives Milvus Lite and a Milvus cluster the same terms (Lite's analyzer has no stemmer). A
stemmed word matches its other forms ("inhibits" finds "inhibition"); the title puts its
words into every chunk of its document; stop words only lengthen the posting lists scored.
docs/benchmarks.md gives what each step does to retrieval quality.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import Stemmer

# Lucene's English stop list: the words too common to tell documents apart.
STOP_WORDS: Final = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)
_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def lexical_terms(text: str) -> list[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]
    return _stemmer().stemWords(words)  # type: ignore[no-any-return]


def lexical_text(title: str, text: str) -> str:
    """What the ``lexical`` field holds for a chunk: terms joined by spaces, which any
    standard analyzer splits back into the same terms."""
    return " ".join(lexical_terms(f"{title}\n{text}" if title else text))


def lexical_query(query: str) -> str:
    return " ".join(lexical_terms(query))
