"""Reads a BEIR-format data set (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirDoc:
    doc_id: str
    title: str
    text: str

    @property
    def passage(self) -> str:
        """Title and abstract as one passage, as BEIR's dense baselines embed them."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class BeirSplit:
    corpus: list[BeirDoc]
    queries: dict[str, str]  # only the queries judged in this split
    qrels: dict[str, dict[str, int]]


def load_split(data_dir: Path, split: str) -> BeirSplit:
    corpus = [
        BeirDoc(str(row["_id"]), str(row.get("title") or ""), str(row.get("text") or ""))
        for row in _jsonl(data_dir / "corpus.jsonl")
    ]
    qrels: dict[str, dict[str, int]] = {}
    with (data_dir / "qrels" / f"{split}.tsv").open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            score = int(row["score"])
            if score > 0:
                qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = score
    queries = {
        str(row["_id"]): str(row["text"])
        for row in _jsonl(data_dir / "queries.jsonl")
        if str(row["_id"]) in qrels
    }
    return BeirSplit(corpus=corpus, queries=queries, qrels={q: r for q, r in qrels.items() if q in queries})


def _jsonl(path: Path) -> list[dict[str, object]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]
