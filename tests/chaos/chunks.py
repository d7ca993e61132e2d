"""Did an ingest job lose or duplicate a chunk? Compared against the chunker, in Milvus itself."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ingest.chunking import Chunker
from ingest.loaders import record_document
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_in


def expected_chunk_ids(records: list[dict[str, Any]], chunk_tokens: int, overlap: int) -> set[str]:
    chunker = Chunker(chunk_tokens, overlap)
    # The worker names a record's source after its id; the chunk id depends on id and text only.
    return {c.chunk_id for r in records for c in chunker.split(record_document(r, str(r["_id"])))}


def chunk_problems(milvus_uri: str, collection: str, expected: set[str], doc_ids: set[str]) -> list[str]:
    """Empty when Milvus holds every expected chunk of ``doc_ids`` exactly once and nothing else."""
    where = field_in("doc_id", sorted(doc_ids))
    milvus = connect_milvus(milvus_uri)
    try:
        rows = milvus.query(
            collection, filter=where, output_fields=["chunk_id"], limit=16_000, consistency_level="Strong"
        )
        count = milvus.query(collection, filter=where, output_fields=["count(*)"], consistency_level="Strong")
    finally:
        milvus.close()
    stored = Counter(r["chunk_id"] for r in rows)
    problems = []
    if duplicated := [c for c, n in stored.items() if n > 1]:
        problems.append(f"{len(duplicated)} chunk ids stored more than once")
    if missing := expected - stored.keys():
        problems.append(f"{len(missing)} of {len(expected)} chunks missing")
    if extra := stored.keys() - expected:
        problems.append(f"{len(extra)} unexpected chunks")
    if count[0]["count(*)"] != len(expected):
        problems.append(f"count(*) is {count[0]['count(*)']}, expected {len(expected)}")
    return problems
