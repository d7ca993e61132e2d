"""The steps every ingest shares, local or on a worker: load inputs, then index in batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ingest.chunking import Chunker
from ingest.documents import Document
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


def load_sources(sources: Iterable[Source]) -> LoadedSources:
    """Load everything; a source that cannot be read fails alone, with its reason."""
    out = LoadedSources()
    for source in sources:
        try:
            loaded = source.load()
        except (LoadError, OSError) as exc:
            out.failures[source.name] = DocOutcome("failed", error=str(exc) or type(exc).__name__)
            continue
        out.documents.extend(loaded.documents)
        out.warnings.extend(loaded.warnings)
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
    for start in range(0, len(documents), batch_documents):
        batch = documents[start : start + batch_documents]
        await on_batch(await indexer.index_batch(collection, batch, chunker, on_embedded))
    # Once per job, not per batch: each flush seals a segment, and many small ones slow a real
    # Milvus down (it compacts them later) as much as unsealed rows slow Milvus Lite.
    await indexer.flush(collection)
