"""The steps every ingest shares, local or on a worker: load inputs, then index in batches."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ingest.chunking import Chunker
from ingest.doc_ids import shown_name
from ingest.documents import Document
from ingest.failures import describe_error
from ingest.indexer import DocOutcome, Indexer
from ingest.loaders import Loaded, LoadError

BatchDone = Callable[[dict[str, DocOutcome]], Awaitable[None]]


@dataclass(frozen=True)
class Source:
    """Something that loads into documents: a file on disk, an upload, a JSON record."""

    name: str
    load: Callable[[], Loaded]


@dataclass
class LoadedSources:
    documents: list[Document] = field(default_factory=list)
    failures: dict[str, DocOutcome] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    capped: bool = False  # documents past max_documents were left out
    # Sources (by name, as documents store it in ``source``) read in part or not at all: a
    # file that failed, one with records that failed, one cut at a cap. Their stored documents
    # cannot be told from deleted ones, so a prune must keep them.
    incomplete: set[str] = field(default_factory=set)


def load_sources(
    sources: Iterable[Source], deadline: float | None = None, max_documents: int | None = None
) -> LoadedSources:
    """Load everything; a source that cannot be read fails alone, with its reason.

    Past ``deadline`` (``time.monotonic()``) no further source is loaded: a caller that gave up
    waiting must not leave this thread loading on. Documents past ``max_documents`` fail: the
    rest of a file that crosses the cap as one error, each later source unread as its own.
    """
    out = LoadedSources()
    for source in sources:
        if deadline is not None and time.monotonic() > deadline:
            break
        # The name keys the error in the job record, so it must be storable even when the
        # name itself is what is wrong (a NUL, a lone surrogate).
        name = shown_name(source.name)
        if max_documents is not None and len(out.documents) >= max_documents:
            out.failures[name] = DocOutcome("failed", error=_past_cap(max_documents, "not loaded"))
            out.capped = True
            out.incomplete.add(source.name)
            continue
        try:
            loaded = source.load()
        except (LoadError, OSError) as exc:
            out.failures[name] = DocOutcome("failed", error=str(exc) or type(exc).__name__)
            out.incomplete.add(source.name)
            continue
        except Exception as exc:  # whatever a file makes a parser raise (RecursionError...)
            out.failures[name] = DocOutcome("failed", error=describe_error(exc))
            out.incomplete.add(source.name)
            continue
        if loaded.failures or loaded.partial:
            out.incomplete.add(source.name)
        documents = loaded.documents
        if max_documents is not None and len(out.documents) + len(documents) > max_documents:
            documents = _cut_at_cap(name, documents, max_documents - len(out.documents), max_documents, out)
            out.incomplete.add(source.name)
        out.documents.extend(documents)
        out.warnings.extend(loaded.warnings)
        out.failures.update({k: DocOutcome("failed", error=v) for k, v in loaded.failures.items()})
    return out


def _past_cap(cap: int, what: str) -> str:
    return f"{what}: the job reached its cap of {cap:,} documents; send the rest as another job"


def _cut_at_cap(
    name: str, documents: list[Document], room: int, cap: int, out: LoadedSources
) -> list[Document]:
    """The first ``room`` documents of one source; the rest fail together under one error, so a
    file of 100,000 records past the cap makes one line in the job's errors, not 100,000."""
    cut = documents[room:]
    first, last = shown_name(cut[0].doc_id), shown_name(cut[-1].doc_id)
    ids = f"id {first!r}" if len(cut) == 1 else f"ids {first!r} to {last!r}"
    where = f"{name} (documents {room + 1:,}-{len(documents):,})"
    out.failures[where] = DocOutcome("failed", error=_past_cap(cap, f"{len(cut):,} not indexed ({ids})"))
    out.capped = True
    return documents[:room]


async def index_documents(
    indexer: Indexer,
    collection: str,
    chunker: Chunker,
    documents: Sequence[Document],
    batch_documents: int,
    on_batch: BatchDone,
    on_embedded: Callable[[int], None] | None = None,
) -> None:
    await indexer.ensure_collection(collection)
    # One version per doc id in a job (the last, as within a batch): two batches are in flight
    # at once, and two versions of a document in both could interleave their writes.
    unique = list({doc.doc_id: doc for doc in documents}.values())
    batches = [unique[i : i + batch_documents] for i in range(0, len(unique), batch_documents)]
    # Two batches in flight: the next one embeds while the previous one writes to Milvus,
    # so the embedder does not idle during upserts. Outcomes are reported in order.
    in_flight: list[asyncio.Task[dict[str, DocOutcome]]] = []
    try:
        for batch in batches:
            in_flight.append(
                asyncio.create_task(indexer.index_batch(collection, batch, chunker, on_embedded))
            )
            if len(in_flight) == 2:
                await on_batch(await in_flight.pop(0))
        while in_flight:
            await on_batch(await in_flight.pop(0))
    finally:
        for task in in_flight:  # a batch failed (an outage): stop the one still running
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    # Once per job, not per batch: each flush seals a segment, and many small ones slow a real
    # Milvus down (it compacts them later) as much as unsealed rows slow Milvus Lite.
    await indexer.flush(collection)
