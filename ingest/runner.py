"""Runs an ingest of local files end to end: load, chunk, embed, index, report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ingest.config import IngestSettings
from ingest.doc_ids import shown_name
from ingest.failures import JOB_TIMEOUT
from ingest.indexer import DocOutcome, IngestReport
from ingest.loaders import LoadLimits, iter_files, load_file
from ingest.pipeline import Source, index_documents, load_sources
from ingest.resources import EmbeddingsFactory, open_resources
from ingest.sandbox import LoaderPool
from services.common.corpus_generation import bump_generation
from services.common.embeddings_client import EmbeddingsClient


class IngestRefused(ValueError):
    """The run was refused before anything was loaded; the message says why."""


class IngestTimedOut(Exception):
    """The run passed its time limit; ``report`` holds what was done by then (it stays indexed)."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


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
    before_loading: Callable[[], None] | None = None,
    on_loaded: Callable[[int], None] | None = None,
    on_documents: Callable[[int, int], None] | None = None,
    on_embedded: Callable[[int], None] | None = None,
    embeddings_client: EmbeddingsFactory = EmbeddingsClient,
) -> IngestReport:
    """Ingest ``path`` into ``collection``; with ``prune``, documents no longer there are deleted.

    The caps of a worker's job hold here too: more files than ``max_job_documents`` is
    :class:`IngestRefused` before any is read, and a run past ``job_timeout_s`` is
    :class:`IngestTimedOut` (without pruning). ``before_loading()`` runs once the run is within
    the caps, before any file is read (``quarry ingest`` checks its services there).
    ``on_loaded(total documents)``,
    ``on_documents(done, chunks)`` and ``on_embedded(chunks)`` report progress.
    ``embeddings_client`` builds the embedder client (see ``open_resources``).
    """
    limit_s = settings.job_timeout_s
    deadline = time.monotonic() + limit_s
    cap = settings.max_job_documents
    report = IngestReport()

    def timed_out(done: int) -> IngestTimedOut:
        return IngestTimedOut(
            f"{JOB_TIMEOUT}: the run passed its limit of {limit_s:g} s with {done} documents done;"
            " what was indexed stays, nothing was pruned; split it into smaller runs",
            report,
        )

    with LoaderPool(settings.sandbox_limits()) as loaders:
        sources = file_sources(path, settings.load_limits(), loaders)
        if len(sources) > cap:
            raise IngestRefused(
                f"{path} holds {len(sources):,} files, over the cap of {cap:,} documents per job;"
                " ingest it in parts"
            )
        if before_loading is not None:
            before_loading()
        loaded = load_sources(sources, deadline, cap)
    report.warnings = loaded.warnings
    for name, outcome in loaded.failures.items():
        report.record(name, outcome)
    if time.monotonic() > deadline:  # loading stopped at the deadline; nothing was written
        raise timed_out(0)
    if on_loaded is not None:
        on_loaded(len(loaded.documents))
    done = 0
    async with open_resources(settings, embeddings_client) as res:

        async def batch_done(outcomes: dict[str, DocOutcome]) -> None:
            nonlocal done
            for doc_id, outcome in outcomes.items():
                report.record(doc_id, outcome)
            done += len(outcomes)
            if on_documents is not None:
                on_documents(len(outcomes), sum(o.chunks for o in outcomes.values()))

        chunker = await res.chunker(collection)
        budget = asyncio.timeout(max(deadline - time.monotonic(), 0))
        try:
            async with budget:
                await index_documents(
                    res.indexer,
                    collection,
                    chunker,
                    loaded.documents,
                    settings.batch_documents,
                    batch_done,
                    on_embedded,
                )
        except TimeoutError:
            if not budget.expired():  # a dependency's own timeout, not the run's limit
                raise
            # A batch cut between its writes and its bump must not leave cached answers stale.
            await bump_generation(res.redis, collection)
            raise timed_out(done) from None
        if prune and loaded.capped:
            # Documents past the cap were never read, so they cannot be told from deleted ones.
            report.warnings.append(
                f"nothing pruned: the run passed its cap of {cap:,} documents, so documents past it"
                " cannot be told from deleted ones"
            )
        elif prune:
            # Files that failed to load, wholly or in part, keep every document stored from
            # them (by its source, not its id: a JSONL file's records have ids of their own):
            # a read error is not a deletion.
            keep = {d.doc_id for d in loaded.documents} | set(loaded.failures)
            report.deleted = len(await res.indexer.prune(collection, keep, loaded.incomplete))
            if loaded.incomplete:
                report.warnings.append(_kept_unread(loaded.incomplete))
    return report


def _kept_unread(sources: set[str], shown: int = 5) -> str:
    names = sorted(sources)
    listed = ", ".join(shown_name(n) for n in names[:shown]) + (
        f" and {len(names) - shown:,} more" if len(names) > shown else ""
    )
    files = "a file" if len(names) == 1 else f"{len(names):,} files"
    return (
        f"not pruned: what is stored from {files} that did not load cleanly ({listed}) stays as it"
        " was; fix them and run again to prune their removed documents"
    )
