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


def load_sources(sources: Iterable[Source], deadline: float | None = None) -> LoadedSources:
    """Load everything; a source that cannot be read fails alone, with its reason.

    Past ``deadline`` (``time.monotonic()``) no further source is loaded: a caller that gave up
    waiting must not leave this thread loading on.
    """
    out = LoadedSources()
    for source in sources:
        if deadline is not None and time.monotonic() > deadline:
            break
        # The name keys the error in the job record, so it must be storable even when the
        # name itself is what is wrong (a NUL, a lone surrogate).
        name = shown_name(source.name)
        try:
            loaded = source.load()
        except (LoadError, OSError) as exc:
            out.failures[name] = DocOutcome("failed", error=str(exc) or type(exc).__name__)
            continue
        except Exception as exc:  # whatever a file makes a parser raise (RecursionError...)
            out.failures[name] = DocOutcome("failed", error=describe_error(exc))
            continue
        out.documents.extend(loaded.documents)
        out.warnings.extend(loaded.warnings)
        out.failures.update({k: DocOutcome("failed", error=v) for k, v in loaded.failures.items()})
    return out


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
