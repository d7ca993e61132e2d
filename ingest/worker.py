"""``python -m ingest.worker``: runs ingest jobs from the Redis queue.

Delivery is at least once: a worker killed mid-job stops heartbeating, another
worker's sweep re-queues the job, and the re-run skips what is already indexed
(content hashes), so the end state has no duplicate and no missing chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from saq import Worker
from saq.types import Context, PartialTimersDict

from ingest.chunking import chunker_for
from ingest.config import IngestSettings
from ingest.failures import JOB_TIMEOUT, describe_error
from ingest.indexer import DocOutcome
from ingest.jobs import JobInput
from ingest.loaders import Loaded, LoadError, LoadLimits, load_bytes, record_document
from ingest.pipeline import Source, index_documents, load_sources
from ingest.queue import create_queue
from ingest.resources import IngestResources, open_resources
from ingest.sandbox import LoaderPool
from services.common.corpus_generation import bump_generation
from services.common.logs import configure_logging, get_logger

_log = get_logger(__name__)


class WorkerContext(Context, total=False):
    resources: IngestResources


INPUTS_MISSING = "inputs_missing"


def _load_input(item: JobInput, limits: LoadLimits, loaders: LoaderPool) -> Loaded:
    if item.error:
        raise LoadError(item.error)
    if item.record is not None:  # already parsed JSON: nothing for a parser to run away on
        return Loaded([record_document(item.record, item.name, limits.doc_id_chars)])
    return loaders.run(partial(load_bytes, item.name, item.data, limits))


async def _timed_out(
    res: IngestResources, job_id: str, collection: str, attempt: int, done: int
) -> dict[str, int]:
    # Not retried: a job too big for its limit would be just as big the next time.
    _log.error("ingest_job_timeout", job_id=job_id, attempt=attempt, documents=done)
    # A batch cut between its writes and its bump (this attempt's or an earlier one's) must not
    # leave cached answers stale.
    await bump_generation(res.redis, collection)
    attempts = f", over {attempt} attempts," if attempt > 1 else ""
    await res.jobs.finish(
        job_id,
        "failed",
        f"{JOB_TIMEOUT}: the job ran past its limit of {res.settings.job_timeout_s:g} s{attempts}"
        f" with {done} documents done in its last attempt; split it into smaller jobs",
    )
    return {"documents": done}


async def ingest_job(ctx: WorkerContext, *, job_id: str) -> dict[str, int]:
    res: IngestResources = ctx["resources"]
    queued = ctx["job"]
    view = await res.jobs.get(job_id)
    if view is None:  # expired or never written: nothing to do
        return {}
    if view.state in ("completed", "failed"):
        # Delivered again after it finished (its worker died before saq heard): its inputs
        # are deleted by now, which must not read as lost.
        return {}
    attempt = await res.jobs.start_attempt(job_id)
    done = 0
    # One limit for the whole job, however many attempts it takes: a re-run after a crash or an
    # outage gets what the earlier attempts left of it, never a fresh one.
    first_started = await res.jobs.first_started_at(job_id) or time.time()
    left_s = first_started + res.settings.job_timeout_s - time.time()
    if left_s <= 0:
        return await _timed_out(res, job_id, view.collection, attempt, done)

    async def heartbeat() -> None:
        # While this process lives the job is alive, even inside one long batch; after a
        # SIGKILL the beats stop and another worker's sweep re-queues the job.
        while True:
            await asyncio.sleep(max(queued.heartbeat / 3, 0.5))
            await queued.update(progress=done / max(len(inputs), 1))

    inputs: list[JobInput] = []
    beating = asyncio.create_task(heartbeat())
    budget = asyncio.timeout(left_s)
    deadline = time.monotonic() + left_s
    try:
        async with budget:
            inputs = await res.jobs.inputs(job_id)
            if not inputs:
                # Expired or evicted from Redis: completing with nothing indexed would lose the
                # documents silently. Not retried; no later attempt can find them either.
                _log.error("ingest_job_inputs_missing", job_id=job_id, expected=view.inputs)
                await res.jobs.finish(
                    job_id,
                    "failed",
                    f"{INPUTS_MISSING}: the job's {view.inputs} inputs are "
                    "no longer in Redis (expired or evicted); submit the documents again",
                )
                return {"documents": 0}
            limits = res.settings.load_limits()
            sources = [Source(i.name, partial(_load_input, i, limits, res.loaders)) for i in inputs]
            loaded = await asyncio.to_thread(load_sources, sources, deadline, res.settings.max_job_documents)
            await res.jobs.record(job_id, loaded.failures)
            if attempt == 1:
                await res.jobs.warn(job_id, loaded.warnings)

            async def batch_done(outcomes: dict[str, DocOutcome]) -> None:
                nonlocal done
                await res.jobs.record(job_id, outcomes)
                done += len(outcomes)

            started = time.perf_counter()
            chunker = await res.chunker(view.collection)
            await index_documents(
                res.indexer,
                view.collection,
                chunker,
                loaded.documents,
                res.settings.batch_documents,
                batch_done,
            )
            if attempt > 1:
                # An earlier attempt may have died after writing but before bumping (its documents
                # now read as unchanged, so nothing here bumps): cached answers must not outlive it.
                await bump_generation(res.redis, view.collection)
    except Exception as exc:
        if budget.expired():  # asyncio.timeout's TimeoutError, not one from a dependency
            return await _timed_out(res, job_id, view.collection, attempt, done)
        if queued.attempts >= queued.retries:
            await res.jobs.finish(job_id, "failed", describe_error(exc))
        _log.warning("ingest_job_attempt_failed", job_id=job_id, attempt=attempt, error=str(exc)[:300])
        raise
    finally:
        beating.cancel()
    await res.jobs.finish(job_id, "completed")
    _log.info(
        "ingest_job_done", job_id=job_id, documents=done, seconds=round(time.perf_counter() - started, 2)
    )
    return {"documents": done}


_DEQUEUE_WAIT_S = 1.0


async def run_worker(settings: IngestSettings) -> None:
    queue = create_queue(settings)
    async with open_resources(settings) as res:
        # saq's defaults, but a sweep every few seconds: it re-queues jobs whose worker died.
        timers: PartialTimersDict = {
            "schedule": 1,
            "worker_info": 10,
            "abort": 1,
            "sweep": settings.sweep_interval_s,
        }
        worker: Worker[WorkerContext] = Worker(
            queue,
            [ingest_job],
            concurrency=settings.worker_concurrency,
            timers=timers,
            # Redis answers an empty wait before redis-py's default 5 s socket timeout ends it:
            # saq's default (wait forever) made every idle dequeue fail as "Redis unreachable".
            dequeue_timeout=_DEQUEUE_WAIT_S,
        )
        worker.context["resources"] = res
        # Load the tokenizer before the first job, not inside it.
        await asyncio.to_thread(chunker_for, settings.chunk_tokens, settings.chunk_overlap_tokens)
        try:
            await worker.start()
        finally:
            await queue.disconnect()


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest-worker", settings.log_level, settings.log_json)
    # saq logs through the standard library: pickups, sweeps and retries belong in the log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
