"""Chunk storage in a Milvus collection (Milvus Lite server or a real cluster, by URI)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.config import IngestSettings
from services.common import vector_schema as vs
from services.common.lexical_index import LexicalIndex, LexicalWrite, shared_index
from services.common.milvus_connect import connect_milvus, needs_load, unreachable
from services.common.milvus_expr import field_equals, field_in

# Milvus caps one query's offset + limit at 16,384 rows.
_QUERY_WINDOW = 16_384
# Collections whose BM25 input is known; bounded, as job requests name collections.
_LAYOUTS_CAP = 1024


@dataclass(frozen=True)
class _Layout:
    lexical: bool
    index: LexicalIndex | None


class StoreUnavailable(ConnectionError):
    """Milvus did not answer (down, restarting): worth waiting for, unlike a refused write."""


@dataclass
class DocState:
    """What the collection holds for one document now."""

    hashes: set[str] = field(default_factory=set)
    chunk_ids: set[str] = field(default_factory=set)

    def current(self, digest: str) -> bool:
        # Every chunk must carry the hash: a run killed between upsert and stale-chunk
        # removal leaves mixed hashes, and the document must then be indexed again.
        return self.hashes == {digest}


@dataclass(frozen=True)
class StoredDocument:
    doc_id: str
    title: str
    source: str
    content_hash: str
    metadata: dict[str, Any]


class ChunkStore:
    """``lexical_index``: the file where collections created here keep their BM25 terms beside
    Milvus (:mod:`services.common.lexical_index`); a collection names its file in its
    properties, so every write to it is made there too, whatever this process's setting."""

    def __init__(
        self,
        uri: str,
        token: str = "",
        dense_index: str = "AUTOINDEX",
        lexical_index: str = "",
    ) -> None:
        self._uri = uri
        self._token = token
        self._dense_index = dense_index
        self._new_index = str(Path(lexical_index).resolve()) if lexical_index else ""
        self._client: Any = None
        self._lock = threading.Lock()
        self._layouts: OrderedDict[str, _Layout] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> ChunkStore:
        return cls(settings.milvus_uri, settings.milvus_token, settings.dense_index, settings.lexical_index)

    def _connected(self) -> Any:
        # Connect on first use, and again after a failed attempt: a process started while
        # Milvus is down must not crash, and must recover once Milvus is back.
        with self._lock:
            if self._client is None:
                self._client = connect_milvus(self._uri, self._token)
            return self._client

    async def _run(
        self, method: str, *args: Any, lexical: Callable[[LexicalWrite], None] | None = None, **kwargs: Any
    ) -> Any:
        """Calls the Milvus client's ``method``; ``lexical`` makes the same change in the lexical
        index of the collection ``args[0]`` (if it has one), committed only if Milvus took it."""
        index = (await self._layout(args[0])).index if lexical is not None else None

        def call() -> Any:
            if lexical is None or index is None:
                return milvus()
            with index.writing(args[0]) as write:
                lexical(write)
                return milvus()

        def milvus() -> Any:
            client = self._connected()
            try:
                try:
                    return getattr(client, method)(*args, **kwargs)
                except Exception as exc:
                    # A restarted Milvus comes back with its collections released.
                    if not (args and isinstance(args[0], str) and needs_load(exc)):
                        raise
                    client.load_collection(args[0])
                    return getattr(client, method)(*args, **kwargs)
            except Exception as exc:
                if unreachable(exc):
                    self._disconnect(client)
                    raise StoreUnavailable(f"Milvus unreachable: {type(exc).__name__}") from exc
                raise

        return await asyncio.to_thread(call)

    def _disconnect(self, client: Any) -> None:
        # pymilvus' own channel recovery can give up for good (GOAWAY mid-recovery); a fresh
        # client on the next call is the reliable way back.
        with self._lock:
            if self._client is client:
                self._client = None
        with contextlib.suppress(Exception):
            client.close()

    async def ensure_collection(self, name: str, dim: int) -> bool:
        """Create the collection if missing, load it if not loaded; True when it was created."""
        if await self.exists(name):
            # A restarted Milvus comes back with its collections released; loading here (a
            # no-op when loaded) spares the job's first query a "not loaded" error and retry.
            await self._run("load_collection", name)
            self._layouts.pop(name, None)  # learnt again: another process may have made it anew
            layout = await self._layout(name)
            if layout.index is not None:
                await asyncio.to_thread(self._reconcile, layout.index, name)
            return False
        index = shared_index(self._new_index) if self._new_index else None

        def create(write: LexicalWrite | None) -> bool:
            client = self._connected()
            if client.has_collection(name):  # made meanwhile by another process
                return False
            client.create_collection(
                name,
                schema=vs.build_schema(dim),
                index_params=vs.build_index_params(client, self._dense_index),
                consistency_level="Strong",
                properties={vs.LEXICAL_INDEX_PROPERTY: self._new_index} if write is not None else None,
            )
            if write is not None:
                write.create()
            return True

        def locked_create() -> bool:
            if index is None:
                return create(None)
            with index.writing(name) as write:
                return create(write)

        if not await asyncio.to_thread(locked_create):
            return await self.ensure_collection(name, dim)
        self._layouts.pop(name, None)
        return True

    def _reconcile(self, index: LexicalIndex, name: str) -> None:
        """Copies a collection into its lexical index again unless the index matches it."""

        def count() -> int:
            rows = self._connected().query(
                name, filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
            return int(rows[0]["count(*)"])

        index.reconcile(name, count, lambda: self._batches(name, "", [*vs.OUTPUT_FIELDS, vs.LEXICAL], 2048))

    def _batches(
        self, collection: str, expr: str, fields: list[str], batch_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row matching ``expr``, in batches: an iterator, because offset + limit may not
        pass the query window."""
        iterator = self._connected().query_iterator(
            collection, batch_size=batch_size, filter=expr, output_fields=fields
        )
        try:
            while batch := iterator.next():
                yield batch
        finally:
            iterator.close()

    async def exists(self, name: str) -> bool:
        return bool(await self._run("has_collection", name))

    async def list_collections(self) -> list[str]:
        return sorted(await self._run("list_collections"))

    async def drop_collection(self, name: str) -> None:
        # A missing collection has no properties to name its index by.
        lexical = LexicalWrite.drop if await self.exists(name) else None
        await self._run("drop_collection", name, lexical=lexical)
        self._layouts.pop(name, None)  # a collection made again under the name gets today's layout

    async def _query(
        self, collection: str, expr: str, fields: list[str], **kwargs: Any
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._run(
            "query",
            collection,
            filter=expr,
            output_fields=fields,
            consistency_level="Strong",
            **kwargs,
        )
        return rows

    async def doc_states(self, collection: str, doc_ids: Sequence[str]) -> dict[str, DocState]:
        """Hashes and chunk ids stored for each of ``doc_ids`` (absent ones are left out)."""
        states: dict[str, DocState] = {}
        if not doc_ids:
            return states
        rows = await self._query(
            collection,
            field_in(vs.DOC_ID, doc_ids),
            [vs.DOC_ID, vs.DOC_HASH, vs.CHUNK_ID],
            limit=_QUERY_WINDOW,
        )
        if len(rows) >= _QUERY_WINDOW and len(doc_ids) > 1:
            # The window may have cut some rows off: ask again in halves.
            half = len(doc_ids) // 2
            return {
                **await self.doc_states(collection, doc_ids[:half]),
                **await self.doc_states(collection, doc_ids[half:]),
            }
        for row in rows:
            state = states.setdefault(row[vs.DOC_ID], DocState())
            state.hashes.add(row[vs.DOC_HASH])
            state.chunk_ids.add(row[vs.CHUNK_ID])
        return states

    async def chunk_ids(self, collection: str, doc_id: str) -> set[str]:
        state = (await self.doc_states(collection, [doc_id])).get(doc_id)
        return state.chunk_ids if state else set()

    async def _documents(self, collection: str, expr: str, **kwargs: Any) -> list[StoredDocument]:
        # Every document has exactly one chunk 0, so it lists each document once.
        rows = await self._query(
            collection,
            f"{vs.CHUNK_INDEX} == 0" + (f" and {expr}" if expr else ""),
            [vs.DOC_ID, vs.TITLE, vs.SOURCE, vs.DOC_HASH, vs.METADATA],
            **kwargs,
        )
        docs = [
            StoredDocument(r[vs.DOC_ID], r[vs.TITLE], r[vs.SOURCE], r[vs.DOC_HASH], r[vs.METADATA] or {})
            for r in rows
        ]
        return sorted(docs, key=lambda d: d.doc_id)

    async def count_documents(self, collection: str) -> int:
        return await self.count(collection, f"{vs.CHUNK_INDEX} == 0")  # one chunk 0 per document

    async def list_documents(
        self, collection: str, offset: int = 0, limit: int = 100
    ) -> list[StoredDocument]:
        return await self._documents(collection, "", offset=offset, limit=limit)

    async def get_document(self, collection: str, doc_id: str) -> StoredDocument | None:
        docs = await self._documents(collection, field_equals(vs.DOC_ID, doc_id), limit=1)
        return docs[0] if docs else None

    async def doc_sources(self, collection: str) -> dict[str, str]:
        """Every stored document's id and the source it was loaded from."""

        def collect() -> dict[str, str]:
            batches = self._batches(collection, f"{vs.CHUNK_INDEX} == 0", [vs.DOC_ID, vs.SOURCE], 4096)
            return {r[vs.DOC_ID]: r[vs.SOURCE] for batch in batches for r in batch}

        result: dict[str, str] = await asyncio.to_thread(collect)
        return result

    async def upsert(self, collection: str, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if not (await self._layout(collection)).lexical:
            await self._run("upsert", collection, list(rows))
            return
        rows = await asyncio.to_thread(lambda: [vs.with_lexical(r) for r in rows])
        await self._run("upsert", collection, list(rows), lexical=lambda write: write.upsert(rows))

    async def _layout(self, collection: str) -> _Layout:
        """Whether BM25 reads the ``lexical`` field (every collection made now) or ``text`` (one
        made before it existed, which keeps working as it was), and its lexical index."""
        known = self._layouts.get(collection)
        if known is None:
            description = await self._run("describe_collection", collection)
            path = vs.lexical_index_path(description)
            known = _Layout(vs.bm25_input(description) == vs.LEXICAL, shared_index(path) if path else None)
            self._layouts[collection] = known
            while len(self._layouts) > _LAYOUTS_CAP:
                self._layouts.popitem(last=False)
        return known

    async def delete_chunks(self, collection: str, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            await self._run(
                "delete",
                collection,
                filter=field_in(vs.CHUNK_ID, chunk_ids),
                lexical=lambda write: write.delete_chunks(chunk_ids),
            )

    async def delete_document(self, collection: str, doc_id: str) -> None:
        await self._run(
            "delete",
            collection,
            filter=field_equals(vs.DOC_ID, doc_id),
            lexical=lambda write: write.delete_document(doc_id),
        )

    async def flush(self, collection: str) -> None:
        """Seals what was written into segments. Milvus Lite searches unsealed rows by
        materialising every one in Python: on 5,183 SciFact chunks a dense search took 160 ms
        before a flush and 35 ms after, BM25 850 ms and 200 ms."""
        await self._run("flush", collection)

    async def count(self, collection: str, expr: str = "") -> int:
        rows = await self._query(collection, expr, ["count(*)"])
        return int(rows[0]["count(*)"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
