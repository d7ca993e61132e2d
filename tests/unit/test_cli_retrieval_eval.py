"""The eval's pieces that need no process: chunks to documents, percentiles, the vector cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.cli.embedding_cache import VectorCache
from services.cli.retrieval_eval import doc_ranking, percentile


def test_a_document_keeps_the_rank_of_its_first_chunk() -> None:
    assert doc_ranking(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert doc_ranking([]) == []


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_vector_cache_keys_on_model_and_text_and_keeps_float32(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path / "v.sqlite3")
    vector = np.float32([0.1, 0.2, 0.3]).tolist()
    cache.put("m1", ["a"], [vector])
    assert cache.get("m1", ["a", "b"]) == [vector, None]
    assert cache.get("m2", ["a"]) == [None]  # another model's vectors are not reused
    assert (cache.hits, cache.misses) == (1, 2)
    assert cache.count() == 1
    cache.close()
    reopened = VectorCache(tmp_path / "v.sqlite3")
    assert reopened.get("m1", ["a"]) == [vector]
    reopened.close()
