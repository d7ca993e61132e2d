"""Content words of a text: the unit of lexical overlap for attribution and groundedness."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_WORD_RE: Final = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_SENTENCE_RE: Final = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
# Function words carry no evidence that a sentence came from a source.
_STOPWORD_TEXT: Final = """
    a an and are as at be been but by can could did do does for from had has have he her his how i if
    in into is it its itself me more most my no not of on or our she so such than that the their them
    then there these they this those to too up us very was we were what when where which while who whom
    why will with would you your yours also any all each may might must should only other over same some
    just about after again against because before being below between both during few further here once
    out own under until am"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())


def content_words(text: str) -> list[str]:
    """Casefolded words that are not stopwords, in order."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [w for w in _WORD_RE.findall(folded) if w not in STOPWORDS]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_RE.findall(text) if s.strip()]
