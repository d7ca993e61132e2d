"""Which sources an answer used: its ``[n]`` markers, or else lexical overlap.

Small models rarely write the markers they are asked for. Citing every source shown
to the model would overstate support, so the fallback attributes each answer sentence
to the source sharing most of its content words, and only when that share reaches
``min_overlap``. The mode is returned with the answer so callers know which rule applied:
``marker`` (the model cited), ``overlap`` (the fallback), ``none`` (nothing supported).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from services.rag.lexical import content_words, sentences

AttributionMode = Literal["marker", "overlap", "none"]
_MARKER_RE: Final = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True)
class Attribution:
    numbers: list[int]
    mode: AttributionMode


def cited_markers(answer: str, n_sources: int) -> list[int]:
    """The in-range ``[n]`` markers of the answer, sorted, without repeats."""
    return sorted({int(n) for n in _MARKER_RE.findall(answer) if 1 <= int(n) <= n_sources})


def attribute(answer: str, sources: Sequence[str], min_overlap: float = 0.5) -> Attribution:
    markers = cited_markers(answer, len(sources))
    if markers:
        return Attribution(markers, "marker")
    vocabularies = [set(content_words(text)) for text in sources]
    used: set[int] = set()
    for sentence in sentences(answer):
        words = set(content_words(sentence))
        if len(words) < 2:  # "Yes." says nothing about where it came from
            continue
        shares = [len(words & vocab) / len(words) for vocab in vocabularies]
        best = max(range(len(shares)), key=lambda i: (shares[i], -i), default=None)
        if best is not None and shares[best] >= min_overlap:
            used.add(best + 1)
    return Attribution(sorted(used), "overlap" if used else "none")
