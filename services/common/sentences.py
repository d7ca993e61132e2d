"""Sentence boundaries, shared by ingest's chunker and rag's answer verification.

The segmenter is sentencex (Wikimedia's rule-based segmenter): abbreviations such as
``e.g.``, decimals such as ``0.5``, dotted names such as ``llama.cpp`` and code such as
``qk_...`` do not end a sentence. Both sides of the product must cut text the same way:
chunks end on these boundaries, and rag recovers the same whole sentences from them.
"""

from __future__ import annotations

import re
from typing import Final

import sentencex

_SPACE_RE: Final = re.compile(r"\s+")
# A Markdown heading line ("## API keys"): a label, not a statement.
_HEADING_RE: Final = re.compile(r"^#{1,6}\s")
_HEADING_LINE_RE: Final = re.compile(r"(^#{1,6}[ \t][^\n]*$)", re.MULTILINE)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, each stripped, whitespace runs kept as written.

    A Markdown heading line is a sentence of its own: the segmenter would run it into the
    first sentence under it.
    """
    found: list[str] = []
    for block in _HEADING_LINE_RE.split(text):
        if _HEADING_LINE_RE.fullmatch(block):
            found.append(block.strip())
        else:
            found.extend(s.strip() for s in sentencex.segment("en", block) if s.strip())
    return found


def normalise_space(sentence: str) -> str:
    """One space for every run of whitespace: hard-wrapped lines read as one sentence."""
    return _SPACE_RE.sub(" ", sentence).strip()


def is_heading(sentence: str) -> bool:
    return bool(_HEADING_RE.match(sentence))


def closed_length(text: str) -> int:
    """How much of a growing text is finished sentences: everything before the last one.

    The last sentence may still grow, so a stream holds it back until another begins.
    """
    pieces = list(sentencex.segment("en", text))
    if not pieces or "".join(pieces) != text:  # no exact offsets: wait for the end of the text
        return 0
    starts = [0]
    for piece in pieces[:-1]:
        starts.append(starts[-1] + len(piece))
    spoken = [start for start, piece in zip(starts, pieces, strict=True) if piece.strip()]
    if spoken and text[spoken[-1] :].lstrip().startswith("["):
        spoken.pop()  # "... 8100. [1" may be the citation of the sentence before: wait for it
    return spoken[-1] if len(spoken) > 1 else 0
