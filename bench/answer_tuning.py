"""Tunes the answer thresholds on a QA set's train split, against a running suite.

For each question it takes the passages rag would (``/v1/search``, hybrid), then scores, for
a grid of settings, what the answer pipeline would do with them:
- extractive: in-scope answered with every required fact and no wrong one; out of scope
  abstained (passage gate ``min_relevance`` and sentence gate ``extract_min_relevance``);
- verification: the share of reference sentences (correct paraphrases, as a strong model
  would write them) that pass, and of negatives (plausible false sentences) that pass.

Usage: python -m bench.answer_tuning [--split train] [--rag URL] [--embedder URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from services.cli.answer_eval import QAItem, load_qa
from services.common.embeddings_client import EmbeddingsClient
from services.rag.answer.answer_type import expected_form, fits
from services.rag.answer.evidence import SentenceVectors, source_sentences
from services.rag.answer.extractive import ExtractPolicy, extract, named_sources
from services.rag.answer.key_terms import Vocabulary, content_coverage
from services.rag.answer.verification import Claim, VerifyPolicy, verify
from services.rag.retrieval.retriever import Hit

QA = Path(__file__).resolve().parent.parent / "examples" / "qa" / "docs_qa.jsonl"


def _hit(raw: dict[str, Any]) -> Hit:
    return Hit(
        raw["chunk_id"],
        raw["doc_id"],
        raw["chunk_index"],
        raw["text"],
        raw["title"],
        raw["source"],
        raw["metadata"],
        raw["score"],
        raw.get("relevance"),
        raw.get("bm25"),
    )


async def _prepare(args: argparse.Namespace, items: list[QAItem]) -> list[dict[str, Any]]:
    embeddings = EmbeddingsClient(args.embedder)
    vectors = SentenceVectors(embeddings.embed, 100_000)
    rows = []
    async with httpx.AsyncClient(base_url=args.rag, timeout=60) as rag:
        for item in items:
            body = {"query": item.question, "collection": args.collection, "top_k": args.top_k}
            hits = [_hit(h) for h in (await rag.post("/v1/search", json=body)).json()["hits"]]
            evidence = source_sentences(hits)
            ev_vectors = await vectors.of([e.embedded for e in evidence])
            plain = await vectors.of([e.text for e in evidence])
            question = (await vectors.of([item.question]))[0]
            numbers = {hit.doc_id: n for n, hit in reversed(list(enumerate(hits, start=1)))}

            def claims_of(sentences: list[dict[str, Any]], numbers: dict[str, int] = numbers) -> list[Claim]:
                return [
                    Claim(s["text"], tuple(sorted(numbers[d] for d in s["cites"] if d in numbers)))
                    for s in sentences
                ]

            references, negatives = claims_of(item.reference), claims_of(item.negatives)
            claim_vectors = await vectors.of([c.statement for c in references + negatives])
            rows.append(
                {
                    "item": item,
                    "relevance": max((h.dense_score or 0.0 for h in hits), default=0.0),
                    "coverage": content_coverage(
                        item.question, " ".join(f"{h.title} {h.text}" for h in hits)
                    ),
                    "evidence": evidence,
                    "named": named_sources(item.question, evidence),
                    "vectors": ev_vectors,
                    "support": [ev_vectors, plain],
                    "question": question,
                    "vocabulary": Vocabulary.of((e.text for e in evidence), {e.label for e in evidence}),
                    "references": list(zip(references, claim_vectors[: len(references)], strict=True)),
                    "negatives": list(zip(negatives, claim_vectors[len(references) :], strict=True)),
                }
            )
    await embeddings.aclose()
    return rows


def _correct(item: QAItem, answer: str | None) -> bool:
    if not item.in_scope:
        return answer is None
    if answer is None:
        return False
    text = answer.casefold()
    facts = all(any(alt.casefold() in text for alt in fact) for fact in item.required)
    return facts and not any(w.casefold() in text for w in item.wrong)


def _extractive(rows: list[dict[str, Any]]) -> None:
    print(
        "extractive: min_relevance extract_min_relevance margin lexical_weight subject_min_relevance"
        " | in-scope correct | out-of-scope abstained"
    )
    results = []
    for gate, floor, margin, covered, weight, subject in itertools.product(
        (0.2,),
        (0.6, 0.65, 0.7, 0.75),
        (0.04, 0.08, 0.12),
        (0.5,),
        (0.4, 0.5, 0.6, 0.7),
        (None, 0.4, 0.5, 0.6),
    ):
        policy = ExtractPolicy(floor, margin, subject_min_relevance=subject)
        inside = outside = inside_ok = outside_ok = 0
        for row in rows:
            item: QAItem = row["item"]
            answer = None
            if row["relevance"] >= gate and row["coverage"] >= covered:
                # As Grounding.scores: the lexical share, and last place for a sentence without
                # the form the question asks for (a number, a version).
                form = expected_form(item.question)
                shares = [
                    weight * content_coverage(item.question, f"{e.label} {e.statement}")
                    - (0.0 if fits(form, e.text) else 2.0)
                    for e in row["evidence"]
                ]
                boost = np.array(shares, dtype=np.float32)
                scores = row["vectors"] @ row["question"] + boost
                quoted = extract(row["evidence"], scores, policy, row["named"])
                answer = " ".join(v.text for v in quoted) or None
            ok = _correct(item, answer)
            if item.in_scope:
                inside, inside_ok = inside + 1, inside_ok + ok
            else:
                outside, outside_ok = outside + 1, outside_ok + ok
        results.append(
            (
                # Both bars must hold: the worse of the two shares first, then their sum.
                (min(inside_ok / inside, outside_ok / outside), inside_ok / inside + outside_ok / outside),
                gate,
                floor,
                margin,
                weight,
                subject,
                inside_ok,
                inside,
                outside_ok,
                outside,
            )
        )
    results.sort(key=lambda r: r[0], reverse=True)
    for _, gate, floor, margin, weight, subject, a, b, c, d in results[:15]:
        print(f"  {gate:.2f} {floor:.2f} {margin:.2f} {weight:.2f} {subject} | {a}/{b} | {c}/{d}")


def _shown(row: dict[str, Any], kind: str, policy: VerifyPolicy, top: int) -> list[tuple[Claim, bool]]:
    """Each claim of ``kind``, and whether the service would show it (supported and on topic)."""
    ranked = np.argsort(-(row["vectors"] @ row["question"]), kind="stable")[:top]
    best = {row["evidence"][i].position for i in ranked}
    verdicts = []
    for claim, vector in row[kind]:
        verdict = verify(claim, vector, row["evidence"], row["support"], row["vocabulary"], policy)
        verdicts.append((claim, verdict.supported, verdict.evidence))
    # The answer stands when one of its sentences rests on a source sentence close to the question.
    on_topic = any(
        supported and evidence is not None and evidence.position in best
        for _, supported, evidence in verdicts
    )
    return [(claim, supported and on_topic) for claim, supported, _ in verdicts]


def _verification(rows: list[dict[str, Any]]) -> None:
    print("verification: min_similarity min_coverage top | references shown | negatives shown")
    grid = itertools.product((0.45, 0.5, 0.55), (0.5, 0.6), (3,), (0, 1, 2, 99))
    for similarity, coverage, top, foreign in grid:
        policy = VerifyPolicy(similarity, coverage, foreign)
        counts = {"references": [0, 0], "negatives": [0, 0]}
        for row in rows:
            for kind, tally in counts.items():
                for _, shown in _shown(row, kind, policy, top):
                    tally[0] += shown
                    tally[1] += 1
        r, n = counts["references"], counts["negatives"]
        shares = f"{r[0]}/{r[1]} ({100 * r[0] / r[1]:.0f}%) | {n[0]}/{n[1]}"
        print(f"  {similarity:.2f} {coverage:.2f} {top:3d} | {shares}")


def _failures(rows: list[dict[str, Any]], policy: VerifyPolicy, extract_policy: ExtractPolicy) -> None:
    for row in rows:
        item: QAItem = row["item"]
        quoted = extract(row["evidence"], row["vectors"] @ row["question"], extract_policy)
        answer = " ".join(v.text for v in quoted) or None
        if not _correct(item, answer):
            print(f"ext rel={row['relevance']:.2f} {item.question!r} {item.required}")
            for v in quoted:
                print(f"      {v.score:.2f} {v.text!r}")
    for row in rows:
        for kind, want in (("references", True), ("negatives", False)):
            for claim, vector in row[kind]:
                verdict = verify(claim, vector, row["evidence"], row["support"], row["vocabulary"], policy)
                if verdict.supported != want:
                    evidence = verdict.evidence.text if verdict.evidence else None
                    print(f"{kind[:3]} {verdict.score:.2f} {claim.text!r}\n      <- {evidence!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--qa", type=Path, default=QA)
    parser.add_argument("--split", default="train")
    parser.add_argument("--collection", default="docs")
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--rag", default="http://127.0.0.1:8103")
    parser.add_argument("--embedder", default="http://127.0.0.1:8101")
    parser.add_argument("--failures", action="store_true", help="List the reference sentences that fail.")
    parser.add_argument("--margin", type=float, default=0.08)
    parser.add_argument("--similarity", type=float, default=0.55)
    parser.add_argument("--coverage", type=float, default=0.5)
    args = parser.parse_args()
    rows = asyncio.run(_prepare(args, load_qa(args.qa, args.split)))
    print(f"{len(rows)} questions ({args.split})")
    if args.failures:
        _failures(rows, VerifyPolicy(args.similarity, args.coverage), ExtractPolicy(0.35, args.margin))
        return
    _extractive(rows)
    _verification(rows)


if __name__ == "__main__":
    main()
