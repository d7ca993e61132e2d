"""Local ingest against the real suite: add, skip unchanged, update without gaps, prune, generations.

Every claim is checked by querying Milvus itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ingest.chunking import Chunker
from ingest.config import IngestSettings
from ingest.loaders import load_file
from ingest.runner import ingest_path
from services.cli.suite import Suite
from services.common.corpus_generation import current_generation
from services.common.milvus_connect import connect_milvus
from services.common.milvus_expr import field_equals

LONG = " ".join(f"Paragraph {i} explains how Quarry indexes chunks idempotently." for i in range(120))


@pytest.fixture
def milvus(suite: Suite) -> Iterator[Any]:
    client = connect_milvus(suite.milvus_uri)
    yield client
    client.close()


def _chunks(milvus: Any, collection: str, doc_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = milvus.query(
        collection,
        filter=field_equals("doc_id", doc_id),
        output_fields=["chunk_id", "doc_hash", "chunk_index", "text", "metadata"],
        consistency_level="Strong",
    )
    return rows


async def test_add_skip_update_prune(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, milvus: Any, redis_url: str
) -> None:
    (tmp_path / "guide.md").write_text("# Guide\nIntro.\n## Install\n" + LONG)
    (tmp_path / "notes.txt").write_text("Notes about the cache.")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    redis = aioredis.Redis.from_url(redis_url)

    first = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert (first.added, first.updated, first.unchanged, first.failed) == (2, 0, 0, 2)
    assert set(first.errors) == {"bad.pdf", "image.png"}
    assert "unsupported file type .png" in first.errors["image.png"]
    guide = _chunks(milvus, collection_name, "guide.md")
    assert len(guide) == first.chunks - 1 > 3
    assert {tuple(r["metadata"]["headings"]) for r in guide} == {("Guide",), ("Guide", "Install")}
    generation = await current_generation(redis, collection_name)
    assert generation >= 1

    again = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 2, 0)
    assert await current_generation(redis, collection_name) == generation  # nothing changed

    # Change the end of the guide: its new chunks replace the old ones, shared chunks keep their ids.
    (tmp_path / "guide.md").write_text("# Guide\nIntro.\n## Install\n" + LONG[: len(LONG) // 2] + " Changed.")
    updated = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert (updated.added, updated.updated, updated.unchanged) == (0, 1, 1)
    after = _chunks(milvus, collection_name, "guide.md")
    expected = Chunker(ingest_settings.chunk_tokens, ingest_settings.chunk_overlap_tokens).split(
        load_file(tmp_path / "guide.md", tmp_path).documents[0]
    )
    assert sorted(r["chunk_id"] for r in after) == sorted(c.chunk_id for c in expected)
    assert len({r["doc_hash"] for r in after}) == 1
    assert {r["chunk_id"] for r in after} & {r["chunk_id"] for r in guide}  # unchanged chunks kept
    assert await current_generation(redis, collection_name) > generation

    (tmp_path / "notes.txt").unlink()
    pruned = await ingest_path(tmp_path, collection_name, ingest_settings, prune=True)
    assert pruned.deleted == 1
    assert _chunks(milvus, collection_name, "notes.txt") == []
    assert len(_chunks(milvus, collection_name, "guide.md")) == len(expected)
    milvus.drop_collection(collection_name)
    await redis.aclose()


async def test_progress_callbacks_add_up(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, milvus: Any
) -> None:
    for i in range(5):
        (tmp_path / f"doc{i}.txt").write_text(f"Document {i}. " + LONG[: 400 * (i + 1)])
    seen: dict[str, int] = {"total": 0, "done": 0, "chunks": 0, "embedded": 0}

    def on_documents(done: int, chunks: int) -> None:
        seen["done"] += done
        seen["chunks"] += chunks

    def on_embedded(n: int) -> None:
        seen["embedded"] += n

    report = await ingest_path(
        tmp_path,
        collection_name,
        ingest_settings,
        on_loaded=lambda total: seen.update(total=total),
        on_documents=on_documents,
        on_embedded=on_embedded,
    )
    assert seen["total"] == seen["done"] == report.added == 5
    assert seen["chunks"] == seen["embedded"] == report.chunks
    milvus.drop_collection(collection_name)


async def test_two_jobs_writing_one_document_at_once_leave_one_version(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, milvus: Any
) -> None:
    """Both read the document as absent before either writes; the later write must still
    remove the other's chunks, so search never holds two versions of one page."""
    versions = []
    for name in ("old", "new"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "page.md").write_text(f"# Page\n{name.title()} text. " + LONG)
        versions.append(folder)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "other.md").write_text("# Other\nAnother page.")
    await ingest_path(tmp_path / "other", collection_name, ingest_settings)  # the collection exists
    for _ in range(3):  # the interleaving differs from run to run; each must end with one version
        reports = await asyncio.gather(*(ingest_path(v, collection_name, ingest_settings) for v in versions))
        assert all(r.failed == 0 for r in reports)
        rows = _chunks(milvus, collection_name, "page.md")
        assert len({r["doc_hash"] for r in rows}) == 1, "two versions of page.md are stored"
        assert len(rows) == len({r["chunk_index"] for r in rows})
