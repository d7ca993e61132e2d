"""BM25 over collections' ``lexical`` terms in SQLite FTS5: lexical search for Milvus Lite.

Milvus Lite scores BM25 in Python, term by term over its posting lists; FTS5 does it in C, in
the searching process. A Milvus cluster scores BM25 natively, so there this index stays off
(an empty ``lexical_index`` setting) and Milvus' own BM25 serves.

Ingest's :class:`ingest.store.ChunkStore` writes, rag's retriever reads; they share the file
(WAL: readers never wait for a writer). Each Milvus write runs inside a :meth:`LexicalIndex.
writing` block: the same change is made here in one transaction that commits only once Milvus
has taken it, so readers see both or neither. The block is announced first in ``writes``
(committed at once, removed with the change): a process that dies between Milvus and the
commit leaves its announcement, and until :meth:`LexicalIndex.reconcile` copies the
collection from Milvus again, searches go to Milvus. A collection is searched here only when
it is ``complete`` (made with the index on, or copied from Milvus) with no write announced.

Each collection has a table of chunks (the fields a search returns) and an FTS5 index over
its terms kept in step by triggers, so BM25's statistics are the collection's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.common import vector_schema as vs

# Writers from several ingest processes take turns; a turn is one batch of chunks, or a whole
# collection copied from Milvus.
_BUSY_TIMEOUT_S = 120.0
_FIELDS = (vs.CHUNK_ID, vs.DOC_ID, vs.CHUNK_INDEX, vs.TEXT, vs.TITLE, vs.SOURCE, vs.METADATA)
_COLUMNS = "c.chunk_id, c.doc_id, c.chunk_index, c.text, c.title, c.source, c.metadata"

_SCHEMA = (
    "CREATE TABLE {c} (id INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL,"
    " chunk_index INTEGER NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL, source TEXT NOT NULL,"
    " metadata TEXT NOT NULL, terms TEXT NOT NULL)",
    "CREATE INDEX {c}_doc ON {c}(doc_id)",
    "CREATE VIRTUAL TABLE {f} USING fts5(terms, content='{c}', content_rowid='id')",
    "CREATE TRIGGER {c}_ai AFTER INSERT ON {c} BEGIN"
    " INSERT INTO {f}(rowid, terms) VALUES (new.id, new.terms); END",
    "CREATE TRIGGER {c}_ad AFTER DELETE ON {c} BEGIN"
    " INSERT INTO {f}({f}, rowid, terms) VALUES ('delete', old.id, old.terms); END",
    "CREATE TRIGGER {c}_au AFTER UPDATE ON {c} BEGIN"
    " INSERT INTO {f}({f}, rowid, terms) VALUES ('delete', old.id, old.terms);"
    " INSERT INTO {f}(rowid, terms) VALUES (new.id, new.terms); END",
)


class LexicalIndex:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, complete INTEGER NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS writes (id INTEGER PRIMARY KEY, collection TEXT NOT NULL,"
                " pid INTEGER NOT NULL)"
            )

    def _db(self) -> sqlite3.Connection:
        # One connection per thread: callers run these methods in worker threads.
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def searchable(self, collection: str) -> bool:
        """Whether searches of ``collection`` may use this index: it holds every chunk, and no
        write to it is under way or was left unfinished."""
        row = (
            self._db()
            .execute(
                "SELECT complete, EXISTS (SELECT 1 FROM writes WHERE collection = ?) FROM collections"
                " WHERE name = ?",
                (collection, collection),
            )
            .fetchone()
        )
        return bool(row and row[0] and not row[1])

    @contextlib.contextmanager
    def writing(self, collection: str) -> Iterator[LexicalWrite]:
        """Wrap a Milvus write to ``collection`` in this, and make the same change through the
        :class:`LexicalWrite` it gives: it commits when the block ends without an error."""
        with self._transaction() as db:
            announced = db.execute(
                "INSERT INTO writes (collection, pid) VALUES (?, ?)", (collection, os.getpid())
            ).lastrowid
        try:
            with self._transaction() as db:
                yield LexicalWrite(db, collection)
                db.execute("DELETE FROM writes WHERE id = ?", (announced,))
        except BaseException:
            with self._transaction() as db:
                db.execute("DELETE FROM writes WHERE id = ?", (announced,))
            raise

    def reconcile(
        self,
        collection: str,
        milvus_count: Callable[[], int],
        milvus_rows: Callable[[], Iterable[Sequence[dict[str, Any]]]],
    ) -> bool:
        """Copies ``collection`` from Milvus again unless this index already matches it: it is
        complete, no write was left unfinished, and it holds as many chunks. Returns whether it
        copied. Writers wait meanwhile, so the copy and the count agree."""
        if self.searchable(collection) and self.count(collection) == milvus_count():
            return False
        with self._transaction() as db:
            # A write announced by a live process is still under way; one by a dead process
            # never reached its commit.
            announced = db.execute("SELECT id, pid FROM writes WHERE collection = ?", (collection,))
            dead = [(id_,) for id_, pid in announced.fetchall() if not _alive(pid)]
            db.executemany("DELETE FROM writes WHERE id = ?", dead)
            row = db.execute("SELECT complete FROM collections WHERE name = ?", (collection,)).fetchone()
            if not dead and row and row[0] and self.count(collection) == milvus_count():
                return False
            # A live writer's announced change has not reached Milvus yet: it takes this
            # transaction's lock first, so it lands in both after the copy.
            write = LexicalWrite(db, collection)
            write.create(complete=False)
            for batch in milvus_rows():
                write.upsert(batch)
            db.execute("UPDATE collections SET complete = 1 WHERE name = ?", (collection,))
        return True

    def count(self, collection: str) -> int | None:
        chunks = _names(collection)[0]
        try:
            return int(self._db().execute(f"SELECT count(*) FROM {chunks}").fetchone()[0])
        except sqlite3.OperationalError:  # no such table: not kept here
            return None

    def search(self, collection: str, terms: str, limit: int) -> list[dict[str, Any]]:
        """The ids of the ``limit`` best chunks for ``terms`` (a lexical query), in Milvus'
        search-hit shape: ``entity`` holds the chunk id, ``distance`` the BM25 score, negated as
        Milvus Lite reports it. :meth:`rows` reads the chunks."""
        chunks, index = _names(collection)
        query = " OR ".join(f'"{term}"' for term in terms.split())
        if not query:
            return []
        # FTS5's bm25() (the rank) is already negated: more relevant is more negative. The
        # best rowids are chosen first, so only they are looked up in the chunk table.
        best = f"SELECT rowid, rank FROM {index} WHERE {index} MATCH ? ORDER BY rank LIMIT ?"
        found = self._db().execute(
            f"SELECT c.chunk_id, r.rank FROM ({best}) r JOIN {chunks} c ON c.id = r.rowid ORDER BY r.rank",
            (query, limit),
        )
        return [{"entity": {vs.CHUNK_ID: chunk_id}, "distance": rank} for chunk_id, rank in found]

    def rows(self, collection: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored fields of those of ``chunk_ids`` this index holds, by chunk id."""
        chunks = _names(collection)[0]
        marks = ",".join("?" * len(chunk_ids))
        found = self._db().execute(
            f"SELECT {_COLUMNS} FROM {chunks} c WHERE chunk_id IN ({marks})", chunk_ids
        )
        return {row[0]: _entity(row) for row in found}

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class LexicalWrite:
    """One collection's change inside :meth:`LexicalIndex.writing`; a collection not kept
    here (BM25 over ``text``, or made before the index) ignores it."""

    def __init__(self, db: sqlite3.Connection, collection: str) -> None:
        self._db = db
        self._collection = collection
        self._chunks, self._index = _names(collection)

    def _kept(self) -> bool:
        return bool(
            self._db.execute("SELECT 1 FROM collections WHERE name = ?", (self._collection,)).fetchone()
        )

    def create(self, complete: bool = True) -> None:
        """An empty collection; complete, as every chunk will be written here, unless it is
        about to be filled from Milvus."""
        self.drop()
        for statement in _SCHEMA:
            self._db.execute(statement.format(c=self._chunks, f=self._index))
        self._db.execute(
            "INSERT INTO collections (name, complete) VALUES (?, ?)", (self._collection, int(complete))
        )

    def drop(self) -> None:
        self._db.execute(f"DROP TABLE IF EXISTS {self._index}")
        self._db.execute(f"DROP TABLE IF EXISTS {self._chunks}")
        self._db.execute("DELETE FROM collections WHERE name = ?", (self._collection,))

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rows as Milvus stores them, ``lexical`` included."""
        if not self._kept():
            return
        self._db.executemany(
            f"INSERT INTO {self._chunks} (chunk_id, doc_id, chunk_index, text, title, source, metadata,"
            " terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(chunk_id) DO UPDATE SET"
            " doc_id = excluded.doc_id, chunk_index = excluded.chunk_index, text = excluded.text,"
            " title = excluded.title, source = excluded.source, metadata = excluded.metadata,"
            " terms = excluded.terms",
            [
                (
                    r[vs.CHUNK_ID],
                    r[vs.DOC_ID],
                    int(r[vs.CHUNK_INDEX]),
                    r[vs.TEXT],
                    r[vs.TITLE],
                    r[vs.SOURCE],
                    json.dumps(r.get(vs.METADATA) or {}),
                    r[vs.LEXICAL],
                )
                for r in rows
            ],
        )

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        self._delete("chunk_id", chunk_ids)

    def delete_document(self, doc_id: str) -> None:
        self._delete("doc_id", [doc_id])

    def _delete(self, column: str, values: Sequence[str]) -> None:
        if self._kept():
            self._db.executemany(f"DELETE FROM {self._chunks} WHERE {column} = ?", [(v,) for v in values])


def _entity(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(_FIELDS, (*row[:6], json.loads(row[6])), strict=True))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (the file is local to it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@lru_cache(maxsize=16)
def shared_index(path: str) -> LexicalIndex:
    """This process's one :class:`LexicalIndex` over ``path``: collections name their file."""
    return LexicalIndex(path)


def _names(collection: str) -> tuple[str, str]:
    # Table names from a digest: collection names come from clients.
    digest = hashlib.sha256(collection.encode()).hexdigest()[:24]
    return f"c_{digest}", f"c_{digest}_f"
