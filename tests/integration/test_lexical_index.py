"""The lexical index on a real SQLite file: changes, deletes, a reopened file, a failed Milvus
write, and a writer that dies between Milvus and its commit. (Through ingest and rag:
tests/integration/test_rag_lexical.py.)"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.common import vector_schema as vs
from services.common.lexical import lexical_query, lexical_text
from services.common.lexical_index import LexicalIndex

COLLECTION = "rocks"


def _row(doc_id: str, index: int, text: str, title: str = "") -> dict[str, Any]:
    return {
        vs.CHUNK_ID: f"{doc_id}:{index}",
        vs.DOC_ID: doc_id,
        vs.CHUNK_INDEX: index,
        vs.TEXT: text,
        vs.TITLE: title,
        vs.SOURCE: f"{doc_id}.md",
        vs.METADATA: {"n": index},
        vs.LEXICAL: lexical_text(title, text),
    }


def _found(index: LexicalIndex, query: str) -> list[str]:
    return [h["entity"][vs.CHUNK_ID] for h in index.search(COLLECTION, lexical_query(query), 10)]


@pytest.fixture
def index(tmp_path: Path) -> LexicalIndex:
    index = LexicalIndex(tmp_path / "lexical.sqlite3")
    with index.writing(COLLECTION) as write:
        write.create()
        write.upsert(
            [
                _row("granite", 0, "Granite forms when magma cools slowly deep underground."),
                _row("granite", 1, "Its crystals are large because cooling took a long time."),
                _row("basalt", 0, "Basalt is a fine-grained volcanic rock.", title="Basalt"),
            ]
        )
    return index


def test_a_search_ranks_chunk_ids_and_rows_read_them(index: LexicalIndex) -> None:
    [hit] = index.search(COLLECTION, lexical_query("volcanic"), 10)
    assert hit["entity"] == {vs.CHUNK_ID: "basalt:0"}
    assert index.rows(COLLECTION, ["basalt:0", "gone:0"]) == {
        "basalt:0": {
            vs.CHUNK_ID: "basalt:0",
            vs.DOC_ID: "basalt",
            vs.CHUNK_INDEX: 0,
            vs.TEXT: "Basalt is a fine-grained volcanic rock.",
            vs.TITLE: "Basalt",
            vs.SOURCE: "basalt.md",
            vs.METADATA: {"n": 0},
        }
    }
    assert hit["distance"] < 0  # a BM25 score, negated as Milvus Lite reports it
    assert _found(index, "cooled crystal") == ["granite:1", "granite:0"]  # stems; best first
    assert index.searchable(COLLECTION) and not index.searchable("other")


def test_a_changed_document_is_found_by_its_new_words_only(index: LexicalIndex) -> None:
    # As ingest re-indexes a changed document: new chunks upserted, stale ones deleted.
    with index.writing(COLLECTION) as write:
        write.upsert([_row("granite", 0, "Obsidian is volcanic glass that cooled too fast for crystals.")])
        write.delete_chunks(["granite:1"])
    assert _found(index, "magma") == []
    assert _found(index, "obsidian") == ["granite:0"]
    assert index.count(COLLECTION) == 2


def test_a_deleted_document_is_gone(index: LexicalIndex) -> None:
    with index.writing(COLLECTION) as write:
        write.delete_document("granite")
    assert _found(index, "granite magma crystals") == []
    assert _found(index, "basalt") == ["basalt:0"]


def test_a_reopened_file_answers_the_same(index: LexicalIndex) -> None:
    before = index.search(COLLECTION, lexical_query("rock cooling"), 10)
    index.close()
    again = LexicalIndex(index.path)
    assert again.search(COLLECTION, lexical_query("rock cooling"), 10) == before
    assert again.searchable(COLLECTION)


def test_a_write_milvus_refused_changes_nothing(index: LexicalIndex) -> None:
    with pytest.raises(ConnectionError), index.writing(COLLECTION) as write:
        write.delete_document("basalt")
        raise ConnectionError("Milvus unreachable")  # the write inside the block failed
    assert _found(index, "basalt") == ["basalt:0"]
    assert index.searchable(COLLECTION)  # nothing left announced


def _die_mid_write(path: str) -> None:
    index = LexicalIndex(path)
    with index.writing(COLLECTION) as write:
        write.delete_document("basalt")
        os.kill(os.getpid(), signal.SIGKILL)  # killed after Milvus took the delete, before the commit


def _milvus_rows(rows: list[dict[str, Any]]) -> Iterable[Sequence[dict[str, Any]]]:
    return [rows[:1], rows[1:]]


def test_a_writer_that_died_mid_write_sends_searches_to_milvus_until_reconciled(
    index: LexicalIndex,
) -> None:
    child = multiprocessing.get_context("spawn").Process(target=_die_mid_write, args=(str(index.path),))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    # Milvus holds the delete; this index rolled it back, so it must not answer.
    assert _found(index, "basalt") == ["basalt:0"]
    assert not index.searchable(COLLECTION)

    milvus = [
        _row("granite", 0, "Granite forms when magma cools slowly deep underground."),
        _row("granite", 1, "Its crystals are large because cooling took a long time."),
    ]
    assert index.reconcile(COLLECTION, lambda: len(milvus), lambda: _milvus_rows(milvus))
    assert index.searchable(COLLECTION)
    assert _found(index, "basalt") == []
    assert _found(index, "magma") == ["granite:0"]


def test_reconcile_copies_what_it_lacks_and_leaves_what_matches(index: LexicalIndex) -> None:
    rows = [_row("granite", 0, "Granite."), _row("granite", 1, "Crystals."), _row("basalt", 0, "Basalt.")]
    assert not index.reconcile(COLLECTION, lambda: 3, lambda: pytest.fail("a matching index is copied"))
    assert not index.searchable("made_before_the_index")
    assert index.reconcile("made_before_the_index", lambda: 3, lambda: _milvus_rows(rows))
    assert index.searchable("made_before_the_index") and index.count("made_before_the_index") == 3
    # The tables come from a digest of the name: a client's name is never SQL.
    hostile = 'x"; DROP TABLE collections; --'
    assert index.reconcile(hostile, lambda: 3, lambda: _milvus_rows(rows))
    assert index.search(hostile, lexical_query("crystals"), 10)[0]["entity"][vs.CHUNK_ID] == "granite:1"
    assert index.searchable(COLLECTION)
