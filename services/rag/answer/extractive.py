"""The extractive answer: the source sentences closest in meaning to the question, verbatim.

Every sentence is copied whole from a source and carries that source's ``[n]``, so it
is supported by construction. The best sentence must reach ``min_relevance`` or there
is no answer. Up to two more follow, in this order: when the question names the subjects
of sources ("Which ports do the gateway and the embedder use?"), the best sentence of
each named source reaching ``subject_min_relevance``, one page per subject whatever
another page scores; the best one's neighbours in its paragraph that reach
``min_relevance`` themselves; then those within ``margin`` of the best. They are read in source
order, and a chosen sentence that opens with a pronoun brings the sentence before it, so
"It listens on port 8100" never comes without its subject.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from services.rag.answer.evidence import SourceSentence, Vectors
from services.rag.answer.key_terms import content_stems, stem
from services.rag.answer.verification import Verdict

if TYPE_CHECKING:
    from services.rag.config import RagSettings

# Headings and fragments ("Rate limits", "Yes.") say nothing on their own.
_MIN_WORDS: Final = 4
_NAMED_RE: Final = re.compile(r"\b(?:the|a|an)\s+([\w-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class ExtractPolicy:
    min_relevance: float
    margin: float = 0.08
    lexical_weight: float = 0.0
    subject_min_relevance: float | None = None  # None: named sources get no quote of their own
    max_sentences: int = 3
    max_chars: int = 600

    @classmethod
    def from_settings(cls, settings: RagSettings) -> ExtractPolicy:
        return cls(
            settings.extract_min_relevance,
            settings.extract_margin,
            settings.extract_lexical_weight,
            settings.extract_subject_min_relevance,
        )


def extract(
    evidence: Sequence[SourceSentence],
    relevance: Vectors,
    policy: ExtractPolicy,
    named: frozenset[int] = frozenset(),
) -> list[Verdict]:
    """Verbatim sentences answering the question, in source order; empty when none is relevant.

    ``relevance`` scores each sentence against the question (ranking and thresholds use it);
    ``named`` holds the numbers of the sources whose title or heading the question names.
    """
    usable = [i for i, e in enumerate(evidence) if len(e.text.split()) >= _MIN_WORDS]
    if not usable:
        return []
    scores = relevance[usable]
    if float(scores.max()) < policy.min_relevance:
        return []
    chosen: dict[int, float] = {}
    used = 0
    # An antecedent brought along for its pronoun does not take a quote's place.
    for quoted, rank in enumerate(_candidates(evidence, usable, scores, policy, named)):
        score = float(scores[rank])
        if quoted >= policy.max_sentences:
            break
        index = usable[rank]
        picked = [index]
        before = _antecedent(evidence, index)
        if before is not None and before not in chosen:
            picked.insert(0, before)
        cost = sum(len(evidence[i].text) for i in picked if i not in chosen)
        if chosen and used + cost > policy.max_chars:
            break
        for i in picked:
            chosen.setdefault(i, score)
        used += cost
    return [
        Verdict(evidence[i].text, (evidence[i].n,), True, round(chosen[i], 4), evidence[i])
        for i in sorted(chosen, key=lambda i: (evidence[i].n, evidence[i].position))
    ]


def named_sources(question: str, evidence: Sequence[SourceSentence]) -> frozenset[int]:
    """The sources whose title or heading holds a word the question puts after "the" or "a":
    what it names ("the gateway", "the LLM service"), not what it asks ("run", "use")."""
    named = {stem(word) for word in _NAMED_RE.findall(question)}
    return frozenset(s.n for s in evidence if named & content_stems(s.label))


def _candidates(
    evidence: Sequence[SourceSentence],
    usable: list[int],
    scores: Vectors,
    policy: ExtractPolicy,
    named: frozenset[int],
) -> list[int]:
    """Ranks to quote, in order: the best; the best sentence of each other named source; the
    best one's neighbours in its paragraph that clear ``min_relevance`` on their own (a
    paragraph about what was asked reads whole: "Each key has its own rate limit ..." before
    "A client over its limit receives HTTP status 429 ..."); the rest within ``margin`` of
    the best."""
    order = [int(r) for r in np.argsort(-scores, kind="stable")]
    best = float(scores[order[0]])
    close = [r for r in order if float(scores[r]) >= best - policy.margin]
    top = evidence[usable[order[0]]]
    picked = [order[0]]
    floor = policy.subject_min_relevance
    if floor is not None:
        quoted = {top.n}
        for candidate in order:
            n = evidence[usable[candidate]].n
            if n in named and n not in quoted and float(scores[candidate]) >= floor:
                picked.append(candidate)
                quoted.add(n)
    rank_of = {index: rank for rank, index in enumerate(usable)}
    for index in (usable[order[0]] - 1, usable[order[0]] + 1):
        rank = rank_of.get(index)
        if rank is None or rank in picked or float(scores[rank]) < policy.min_relevance:
            continue
        neighbour = evidence[index]
        if neighbour.n == top.n and neighbour.label == top.label:
            picked.append(rank)
    return picked + [r for r in close if r not in picked]


def _antecedent(evidence: Sequence[SourceSentence], index: int) -> int | None:
    """The sentence before ``index`` in the same source, when ``index`` opens with a pronoun."""
    sentence = evidence[index]
    if not sentence.opens_with_pronoun or index == 0 or evidence[index - 1].n != sentence.n:
        return None
    return index - 1
