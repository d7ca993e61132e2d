"""``quarry eval --answers``: answer quality through the real ``/v1/query`` path.

Every question is asked through the gateway, once per variant, the variants in turn for
each question so that they share the machine's state. Scores:
- correct: in scope, answered, every required fact present and no known-wrong one;
  out of scope, abstained (``answerable: false``);
- supported: the share of shown sentences the service marked supported;
- latency: p50/p99 of uncached answers, as the client saw them.

``--claims`` asks BEIR claims (SciFact) as questions and reports how often the answer's
first citation is a relevant document, and how often it abstains.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.rag.variants.spec import PIN_PATTERN

# Name → the request fields that select it.
VARIANTS: dict[str, dict[str, str]] = {
    "auto": {"answer_mode": "auto"},
    "extractive": {"answer_mode": "extractive"},
    "unverified": {"answer_mode": "generate", "unsupported": "mark"},
}
# Any other name is one of rag's answer variants (docs/variants.md), pinned: an admin key's right,
# so a variant is scored before it takes traffic.
_PINNED = re.compile(PIN_PATTERN)


def request_fields(name: str) -> dict[str, str]:
    """The request fields that select an answer mode by name, or pin the variant of that name."""
    if name in VARIANTS:
        return VARIANTS[name]
    if not _PINNED.fullmatch(name):
        raise ValueError(
            f"{name!r} is neither {', '.join(VARIANTS)} nor a variant name (name or name@version)"
        )
    return {"variant": name}


@dataclass(frozen=True)
class QAItem:
    id: str
    split: str
    question: str
    in_scope: bool
    required: list[list[str]]
    wrong: list[str]
    reference: list[dict[str, Any]]
    negatives: list[dict[str, Any]]


def load_qa(path: Path, split: str | None = None) -> list[QAItem]:
    items = [QAItem(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return [item for item in items if split in (None, "all") or item.split == split]


@dataclass(frozen=True)
class Outcome:
    correct: bool
    abstained: bool
    sentences: int
    supported: int


def score(item: QAItem, body: dict[str, Any]) -> Outcome:
    abstained = body.get("answerable") is False
    shown = body.get("answer_sentences") or []
    supported = sum(bool(s.get("supported")) for s in shown)
    if not item.in_scope:
        return Outcome(abstained, abstained, len(shown), supported)
    answer = str(body.get("answer", "")).casefold()
    has_facts = all(any(alt.casefold() in answer for alt in fact) for fact in item.required)
    no_wrong = not any(w.casefold() in answer for w in item.wrong)
    return Outcome(not abstained and has_facts and no_wrong, abstained, len(shown), supported)


@dataclass
class Tally:
    in_scope: int = 0
    in_scope_correct: int = 0
    out_scope: int = 0
    out_scope_abstained: int = 0
    sentences: int = 0
    supported: int = 0
    cached: int = 0
    degraded: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)

    def add(self, item: QAItem, body: dict[str, Any], latency_ms: float) -> None:
        outcome = score(item, body)
        if item.in_scope:
            self.in_scope += 1
            self.in_scope_correct += outcome.correct
        else:
            self.out_scope += 1
            self.out_scope_abstained += outcome.abstained
        self.sentences += outcome.sentences
        self.supported += outcome.supported
        self.degraded += bool(body.get("degraded"))
        if body.get("cached"):
            self.cached += 1
        else:
            self.latencies_ms.append(latency_ms)
        self.answers.append({"id": item.id, "correct": outcome.correct, "response": body})

    def row(self) -> dict[str, str]:
        return {
            "in-scope correct": _share(self.in_scope_correct, self.in_scope),
            "out-of-scope abstained": _share(self.out_scope_abstained, self.out_scope),
            "sentences supported": _share(self.supported, self.sentences),
            "p50 ms": _percentile(self.latencies_ms, 50),
            "p99 ms": _percentile(self.latencies_ms, 99),
            "cached": str(self.cached),
            "degraded": str(self.degraded),
        }


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "-"


def _percentile(values: list[float], pct: int) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return f"{ordered[index]:.0f}"


class QueryRefused(Exception):
    """The gateway answered /v1/query with an error (a wrong key, an unknown collection...):
    every later question would get the same, so the run stops with its message."""

    def __init__(self, status: int, body: str) -> None:
        try:
            error = json.loads(body)["error"]
            said = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            said = body[:300]
        super().__init__(f"/v1/query answered {status} ({said})")
        self.status = status


def ask(
    client: httpx.Client, question: str, collection: str, extra: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = client.post("/v1/query", json={"question": question, "collection": collection, **extra})
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise QueryRefused(response.status_code, response.text)
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise QueryRefused(response.status_code, response.text) from None
    return body, latency_ms


def run_answers(
    client: httpx.Client, items: list[QAItem], collection: str, variants: Iterable[str]
) -> dict[str, Tally]:
    names = list(variants)
    tallies = {name: Tally() for name in names}
    for i, item in enumerate(items):
        # Variants take turns going first, so none is always the one that warms a cache.
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            body, latency_ms = ask(client, item.question, collection, request_fields(name))
            tallies[name].add(item, body, latency_ms)
    return tallies


@dataclass
class ClaimTally:
    asked: int = 0
    abstained: int = 0
    first_relevant: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        answered = self.asked - self.abstained
        return {
            "claims": str(self.asked),
            "abstained": _share(self.abstained, self.asked),
            "first citation relevant": _share(self.first_relevant, answered),
            "p50 ms": _percentile(self.latencies_ms, 50),
        }


def run_claims(
    client: httpx.Client,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    collection: str,
    extra: dict[str, Any],
    limit: int | None = None,
) -> ClaimTally:
    tally = ClaimTally()
    for query_id, claim in list(queries.items())[:limit]:
        body, latency_ms = ask(client, claim, collection, extra)
        tally.asked += 1
        tally.latencies_ms.append(latency_ms)
        if body.get("answerable") is False:
            tally.abstained += 1
            continue
        shown = body.get("answer_sentences") or []
        first = next((n for s in shown for n in s.get("citations", [])), None)
        cited = {c["n"]: c["doc_id"] for c in body.get("citations", [])}
        if first is not None and cited.get(first) in qrels.get(query_id, {}):
            tally.first_relevant += 1
    return tally
