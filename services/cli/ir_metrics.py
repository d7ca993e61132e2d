"""Ranking metrics with BEIR's conventions (graded nDCG, recall over judged-relevant docs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {doc for doc, gain in relevant.items() if gain > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@10, Recall@100 and MRR@10 over the judged queries in ``qrels``."""
    totals = {"nDCG@10": 0.0, "Recall@10": 0.0, "Recall@100": 0.0, "MRR@10": 0.0}
    for query_id, relevant in qrels.items():
        ranked = runs.get(query_id, [])
        totals["nDCG@10"] += ndcg_at_k(ranked, relevant, 10)
        totals["Recall@10"] += recall_at_k(ranked, relevant, 10)
        totals["Recall@100"] += recall_at_k(ranked, relevant, 100)
        totals["MRR@10"] += mrr_at_k(ranked, relevant, 10)
    return {name: value / len(qrels) for name, value in totals.items()} if qrels else totals
