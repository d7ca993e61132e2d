"""Runs an ingest of local files end to end: load, chunk, embed, index, report."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from ingest.config import IngestSettings
from ingest.indexer import DocOutcome, IngestReport
from ingest.loaders import LoadLimits, iter_files, load_file
from ingest.pipeline import Source, index_documents, load_sources
from ingest.resources import EmbeddingsFactory, open_resources
from ingest.sandbox import LoaderPool
from services.common.embeddings_client import EmbeddingsClient


def file_sources(path: Path, limits: LoadLimits, loaders: LoaderPool) -> list[Source]:
    root = path if path.is_dir() else path.parent
    return [
        Source(
            file.relative_to(root).as_posix(), partial(loaders.run, partial(load_file, file, root, limits))
        )
        for file in iter_files(path)
    ]


async def ingest_path(
    path: Path,
    collection: str,
    settings: IngestSettings,
    *,
    prune: bool = False,
    on_loaded: Callable[[int], None] | None = None,
    on_documents: Callable[[int, int], None] | None = None,
    on_embedded: Callable[[int], None] | None = None,
    embeddings_client: EmbeddingsFactory = EmbeddingsClient,
) -> IngestReport:
    """Ingest ``path`` into ``collection``; with ``prune``, documents no longer there are deleted.

    ``on_loaded(total documents)``, ``on_documents(done, chunks)`` and ``on_embedded(chunks)``
    report progress. ``embeddings_client`` builds the embedder client (see ``open_resources``).
    """
    with LoaderPool(settings.sandbox_limits()) as loaders:
        loaded = load_sources(file_sources(path, settings.load_limits(), loaders))
    report = IngestReport(warnings=loaded.warnings)
    for name, outcome in loaded.failures.items():
        report.record(name, outcome)
    if on_loaded is not None:
        on_loaded(len(loaded.documents))
    async with open_resources(settings, embeddings_client) as res:

        async def batch_done(outcomes: dict[str, DocOutcome]) -> None:
            for doc_id, outcome in outcomes.items():
                report.record(doc_id, outcome)
            if on_documents is not None:
                on_documents(len(outcomes), sum(o.chunks for o in outcomes.values()))

        chunker = await res.chunker(collection)
        await index_documents(
            res.indexer,
            collection,
            chunker,
            loaded.documents,
            settings.batch_documents,
            batch_done,
            on_embedded,
        )
        if prune:
            # Files that failed to load keep their old chunks: a read error is not a deletion.
            keep = {d.doc_id for d in loaded.documents} | set(loaded.failures)
            report.deleted = len(await res.indexer.prune(collection, keep))
    return report
