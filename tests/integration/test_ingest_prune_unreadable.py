"""``--prune`` never deletes what a file that failed to load had stored: its records' ids are
their own, not the file's name, so they cannot be told from deleted ones. Against the real
suite (Milvus Lite, the embedder, rag's /v1/search) and the real ``quarry ingest`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Suite
from services.common.http_client import create_http2_client

RECORDS = [
    {"_id": "r1", "title": "Tide pools", "text": "Tide pools hold anemones and small crabs at low tide."},
    {"_id": "r2", "title": "Glaciers", "text": "Glaciers carve valleys as they slowly move downhill."},
    {"_id": "r3", "title": "Volcanoes", "text": "Volcanoes vent magma, ash and gas from deep inside."},
]


def _jsonl(records: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _stored(milvus: Any, collection: str) -> set[str]:
    rows = milvus.query(
        collection, filter="chunk_index == 0", output_fields=["doc_id"], consistency_level="Strong"
    )
    return {r["doc_id"] for r in rows}


async def _found(suite: Suite, collection: str, query: str) -> list[str]:
    async with create_http2_client(suite.url("rag")) as client:
        response = await client.post("/v1/search", json={"query": query, "collection": collection})
    assert response.status_code == 200, response.text
    return [h["doc_id"] for h in response.json()["hits"]]


async def test_a_jsonl_file_that_fails_to_load_keeps_its_records(
    suite: Suite, tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, milvus: Any
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(_jsonl(RECORDS))
    (tmp_path / "notes.txt").write_text("Notes that are deleted before the second run.")
    first = await ingest_path(tmp_path, collection_name, ingest_settings)
    assert (first.added, first.failed) == (4, 0), first

    corpus.write_text(_jsonl(RECORDS)[:25])  # truncated inside its first record: nothing loads
    (tmp_path / "notes.txt").unlink()
    pruned = await ingest_path(tmp_path, collection_name, ingest_settings, prune=True)

    assert pruned.failed == 1 and "no valid records" in pruned.errors["corpus.jsonl"], pruned
    assert pruned.deleted == 1  # notes.txt, which is gone: what was read is still pruned
    assert _stored(milvus, collection_name) == {"r1", "r2", "r3"}
    assert (await _found(suite, collection_name, "where do anemones live"))[0] == "r1"
    assert any(w.startswith("not pruned") and "corpus.jsonl" in w for w in pruned.warnings), pruned


async def test_a_jsonl_file_with_a_bad_line_prunes_none_of_its_records(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, milvus: Any
) -> None:
    (tmp_path / "corpus.jsonl").write_text(_jsonl(RECORDS))
    (tmp_path / "clean.jsonl").write_text(
        _jsonl([{"_id": "c1", "text": "Kept."}, {"_id": "c2", "text": "Cut."}])
    )
    await ingest_path(tmp_path, collection_name, ingest_settings)

    # r2's line is damaged and r3 removed: which of the two a reader meant cannot be told.
    (tmp_path / "corpus.jsonl").write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    (tmp_path / "clean.jsonl").write_text(_jsonl([{"_id": "c1", "text": "Kept."}]))
    pruned = await ingest_path(tmp_path, collection_name, ingest_settings, prune=True)

    assert "corpus.jsonl line 2" in pruned.errors, pruned
    assert pruned.deleted == 1  # c2: its file loaded cleanly, so its removal is a deletion
    assert _stored(milvus, collection_name) == {"r1", "r2", "r3", "c1"}


def test_quarry_ingest_prune_reports_the_file_and_keeps_its_records(
    suite: Suite, tmp_path: Path, ingest_settings: IngestSettings, collection_name: str, milvus: Any
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(_jsonl(RECORDS))
    command = [sys.executable, "-c", "from services.cli.main import main; main()", "ingest", str(tmp_path)]
    command += ["--collection", collection_name]
    env = {**os.environ, **suite.service_env()}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *extra], env=env, capture_output=True, text=True, timeout=300)

    assert run().returncode == 0
    corpus.write_bytes(b"\x00\x01 not json at all\n")
    done = run("--prune")

    output = " ".join(done.stdout.split())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed corpus.jsonl: no valid records in JSONL file" in output, output
    assert "not pruned" in output
    assert _stored(milvus, collection_name) == {"r1", "r2", "r3"}
