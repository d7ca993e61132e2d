"""Idempotent, incremental indexing of documents into one collection.

Documents go in batches: one Milvus query finds what is stored, unchanged
documents are skipped by content hash, the rest are chunked and embedded
together (so the embedder's batcher stays full), then upserted under a per-collection
write lock that also deletes the stale chunks (see ``Indexer._replace``). Order matters
for readers: new chunks are upserted before stale ones are deleted, so a query
never finds a changed document missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from ingest.chunking import Chunk, Chunker
from ingest.doc_ids import check_doc_id, shown_name
from ingest.documents import Document
from ingest.failures import describe_error
from ingest.store import ChunkStore, StoreUnavailable
from services.common import vector_schema as vs
from services.common.corpus_generation import bump_generation
from services.common.embeddings_client import EmbeddingsClient, EmbeddingsUnavailable
from services.common.logs import get_logger

_log = get_logger(__name__)
T = TypeVar("T")

Status = Literal["added", "updated", "unchanged", "deleted", "failed"]
STATUSES: tuple[Status, ...] = ("added", "updated", "unchanged", "deleted", "failed")

_EMBED_BATCH = 64
_UPSERT_ROWS = 512
# The write lock outlives a worker that dies holding it by this much at most; a waiting writer
# gives up (and its job retries) after _LOCK_WAIT_S.
_LOCK_TTL_S = 300.0
_LOCK_WAIT_S = 600.0


def _write_lock(collection: str) -> str:
    return f"quarry:ingest:write-lock:{collection}"


@dataclass(frozen=True)
class DocOutcome:
    status: Status
    chunks: int = 0
    error: str = ""


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def record(self, doc_id: str, outcome: DocOutcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        self.chunks += outcome.chunks
        if outcome.error:
            self.errors[doc_id] = outcome.error

    def fail(self, name: str, error: str) -> None:
        self.record(name, DocOutcome("failed", error=error))


@dataclass
class _Pending:
    doc: Document
    chunks: list[Chunk]
    status: Status


def _log_wait(state: RetryCallState) -> None:
    outcome = state.outcome
    error = str(outcome.exception()) if outcome is not None else ""
    _log.warning("dependency_unavailable_waiting", attempt=state.attempt_number, error=error)


class Indexer:
    def __init__(
        self,
        store: ChunkStore,
        embeddings: EmbeddingsClient,
        redis: Any,
        dim: int,
        embed_concurrency: int = 4,
        dependency_wait_s: float = 300.0,
        max_document_chunks: int = 5000,
        max_doc_id_chars: int = vs.MAX_DOC_ID_CHARS,
        max_document_chars: int = 2_000_000,
    ) -> None:
        self._store = store
        self._embeddings = embeddings
        self._redis = redis
        self._dim = dim
        self._embed_slots = asyncio.Semaphore(embed_concurrency)
        self._dependency_wait_s = dependency_wait_s
        self._max_chunks = max_document_chunks
        self._max_id_chars = max_doc_id_chars
        self._max_chars = max_document_chars

    async def ensure_collection(self, collection: str) -> bool:
        return await self._waiting(lambda: self._store.ensure_collection(collection, self._dim))

    async def flush(self, collection: str) -> None:
        await self._waiting(lambda: self._store.flush(collection))

    async def index_batch(
        self,
        collection: str,
        docs: Sequence[Document],
        chunker: Chunker,
        on_embedded: Callable[[int], None] | None = None,
    ) -> dict[str, DocOutcome]:
        """Index ``docs``; the outcome of each by doc id. Only dependency outages raise."""
        outcomes: dict[str, DocOutcome] = {}
        latest: dict[str, Document] = {}
        hashes: dict[str, str] = {}
        for doc in docs:
            try:
                # Loaders check ids already; this keeps any other caller's bad id out of the
                # Milvus filter below, where it would fail the whole batch.
                check_doc_id(doc.doc_id, self._max_id_chars)
                digest = doc.content_hash  # metadata nested past the recursion limit raises here
            except Exception as exc:  # one bad document fails alone
                outcomes[shown_name(doc.doc_id)] = DocOutcome("failed", error=describe_error(exc))
                continue
            if doc.doc_id in latest:
                outcomes[doc.doc_id] = DocOutcome("failed", error="duplicate doc id in one batch")
            latest[doc.doc_id] = doc
            hashes[doc.doc_id] = digest
        states = await self._waiting(lambda: self._store.doc_states(collection, list(latest)))
        pending: list[_Pending] = []
        for doc_id, doc in latest.items():
            state = states.get(doc_id)
            if state is not None and state.current(hashes[doc_id]):
                outcomes[doc_id] = DocOutcome("unchanged")
                continue
            try:
                if len(doc.text) > self._max_chars:
                    # Checked before splitting: the splitter's time and memory grow with the
                    # text, and past this the chunk cap would refuse most documents anyway.
                    raise ValueError(
                        f"document has {len(doc.text):,} characters, over the cap of {self._max_chars:,}"
                    )
                # Off the event loop: a long split would starve the job's heartbeat, and a job
                # that stops beating is taken for dead and run again by another worker.
                chunks = await asyncio.to_thread(chunker.split, doc)
                if not chunks:
                    raise ValueError("document has no text to index")
                if len(chunks) > self._max_chunks:
                    raise ValueError(
                        f"document makes {len(chunks):,} chunks, over the cap of {self._max_chunks:,}"
                    )
            except Exception as exc:  # one bad document fails alone
                outcomes[doc_id] = DocOutcome("failed", error=describe_error(exc))
                continue
            pending.append(_Pending(doc, chunks, "updated" if state else "added"))
        if pending:
            outcomes.update(await self._write(collection, pending, on_embedded))
            if any(o.status in ("added", "updated") for o in outcomes.values()):
                await bump_generation(self._redis, collection)
        return outcomes

    async def _write(
        self, collection: str, pending: list[_Pending], on_embedded: Callable[[int], None] | None
    ) -> dict[str, DocOutcome]:
        try:
            rows = await self._embedded_rows(pending, on_embedded)
            await self._replace(collection, pending, rows)
        except (EmbeddingsUnavailable, StoreUnavailable):  # outages stop the job; never a document's fault
            raise
        except Exception as exc:
            if len(pending) == 1:
                return {pending[0].doc.doc_id: DocOutcome("failed", error=describe_error(exc))}
            # Something in the batch was refused: redo one by one so only the culprit fails.
            _log.warning("batch_failed_retrying_singly", collection=collection, error=describe_error(exc))
            results: dict[str, DocOutcome] = {}
            for item in pending:
                results.update(await self._write(collection, [item], on_embedded))
            return results
        return {p.doc.doc_id: DocOutcome(p.status, chunks=len(p.chunks)) for p in pending}

    async def _replace(self, collection: str, pending: list[_Pending], rows: list[dict[str, Any]]) -> None:
        """Upserts the documents' new chunks, then deletes every other chunk they have.

        Held under a per-collection Redis lock, and the stored chunks are read again inside it:
        two jobs writing one document at once (each having read it before the other wrote)
        then leave the later write's chunks only, never both versions. Embedding, the slow
        part, stays outside the lock.
        """
        async with self._redis.lock(
            _write_lock(collection), timeout=_LOCK_TTL_S, blocking_timeout=_LOCK_WAIT_S
        ):
            states = await self._waiting(
                lambda: self._store.doc_states(collection, [p.doc.doc_id for p in pending])
            )
            for i in range(0, len(rows), _UPSERT_ROWS):
                part = rows[i : i + _UPSERT_ROWS]
                await self._waiting(partial(self._store.upsert, collection, part))
            stale = sorted(
                cid
                for p in pending
                for cid in (states[p.doc.doc_id].chunk_ids if p.doc.doc_id in states else set())
                - {c.chunk_id for c in p.chunks}
            )
            await self._waiting(lambda: self._store.delete_chunks(collection, stale))

    async def _embed_waiting(self, batch: list[str]) -> list[list[float]]:
        return await self._waiting(lambda: self._embeddings.embed(batch))

    async def _waiting(self, call: Callable[[], Awaitable[T]]) -> T:
        """Runs ``call``, waiting out an outage of the embedder (a restart, a full queue) or of
        Milvus with backoff, for up to ``dependency_wait_s``.

        Every call wrapped here is idempotent (embedding, reading states, upserting by chunk
        id, deleting by id), so retrying is safe; a job then outlives a restart instead of
        spending its attempts in seconds (F6 in docs/reliability.md).
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((EmbeddingsUnavailable, StoreUnavailable)),
            stop=stop_after_delay(self._dependency_wait_s),
            wait=wait_exponential(multiplier=0.5, max=10.0),
            before_sleep=_log_wait,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity reraises the last failure")

    async def _embedded_rows(
        self, pending: list[_Pending], on_embedded: Callable[[int], None] | None
    ) -> list[dict[str, Any]]:
        texts = [c.text for p in pending for c in p.chunks]

        async def embed(batch: list[str]) -> list[list[float]]:
            async with self._embed_slots:
                vectors = await self._embed_waiting(batch)
            if on_embedded is not None:
                on_embedded(len(batch))
            return vectors

        # Sent shortest first, so each request holds chunks of like length and the model pads
        # little (sentence-transformers orders one encode call the same way); several requests
        # in flight keep the embedder's dynamic batcher busy.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = await asyncio.gather(
            *(
                embed([texts[j] for j in order[i : i + _EMBED_BATCH]])
                for i in range(0, len(order), _EMBED_BATCH)
            )
        )
        by_chunk: list[list[float]] = [[] for _ in texts]
        for position, vector in zip(order, (v for batch in batches for v in batch), strict=True):
            by_chunk[position] = vector
        vectors = iter(by_chunk)
        return [
            {
                vs.CHUNK_ID: c.chunk_id,
                vs.DOC_ID: p.doc.doc_id,
                vs.DOC_HASH: p.doc.content_hash,
                vs.CHUNK_INDEX: c.index,
                vs.TEXT: c.text,
                vs.TITLE: p.doc.title[:1024],
                vs.SOURCE: p.doc.source[:2048],
                vs.METADATA: {**p.doc.metadata, "headings": list(c.headings)}
                if c.headings
                else p.doc.metadata,
                vs.DENSE: next(vectors),
            }
            for p in pending
            for c in p.chunks
        ]

    async def delete(self, collection: str, doc_id: str) -> bool:
        if not await self._store.chunk_ids(collection, doc_id):
            return False
        await self._store.delete_document(collection, doc_id)
        await bump_generation(self._redis, collection)
        return True

    async def prune(self, collection: str, keep: set[str], keep_sources: set[str]) -> list[str]:
        """Delete every document of ``collection`` not in ``keep`` and not loaded from one of
        ``keep_sources``; the ids deleted."""
        stored = await self._store.doc_sources(collection)
        gone = sorted(d for d, source in stored.items() if d not in keep and source not in keep_sources)
        for doc_id in gone:
            await self._store.delete_document(collection, doc_id)
        if gone:
            await bump_generation(self._redis, collection)
        return gone
