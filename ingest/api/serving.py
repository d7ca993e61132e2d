"""What the ingest API does; routes only translate HTTP to these calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from redis.exceptions import RedisError
from saq import Queue
from starlette.datastructures import UploadFile

from ingest.api.schemas import (
    CollectionInfo,
    CreateCollection,
    DocumentError,
    DocumentList,
    JobCounts,
    JobList,
    JobStatus,
    StoredDocumentInfo,
)
from ingest.collections import CollectionConfig, valid_collection_name
from ingest.doc_ids import InvalidDocId, check_doc_id
from ingest.jobs import JobInput, JobView
from ingest.queue import enqueue_ingest
from ingest.resources import IngestResources
from services.common.corpus_generation import bump_generation, current_generation
from services.common.errors import APIError
from services.common.logs import get_logger

_log = get_logger(__name__)
T = TypeVar("T")


@asynccontextmanager
async def _dependencies() -> AsyncIterator[None]:
    """Turn an outage of Redis or Milvus into a 503 envelope instead of a 500."""
    try:
        yield
    except APIError:
        raise
    except RedisError as exc:
        _log.warning("redis_unavailable", error=str(exc)[:300])
        raise APIError(503, "redis_unavailable", "the job store (Redis) is unavailable; retry") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("pymilvus") or isinstance(exc, ConnectionError | TimeoutError):
            _log.warning("milvus_unavailable", error=str(exc)[:300])
            raise APIError(
                503, "milvus_unavailable", "the vector store (Milvus) is unavailable; retry"
            ) from exc
        raise


async def _guarded(call: Awaitable[T]) -> T:
    async with _dependencies():
        return await call


def _check_name(collection: str) -> None:
    if not valid_collection_name(collection):
        raise APIError(
            422, "invalid_collection", "collection names are a letter or _, then letters, digits or _"
        )


class IngestService:
    def __init__(self, resources: IngestResources, queue: Queue) -> None:
        self._res = resources
        self._queue = queue
        self._settings = resources.settings

    @property
    def max_files(self) -> int:
        return self._settings.max_upload_files

    @property
    def max_json_body_bytes(self) -> int:
        return self._settings.max_json_body_bytes

    async def _info(self, name: str) -> CollectionInfo:
        config = await self._res.configs.get(name)
        return CollectionInfo(
            name=name,
            chunk_tokens=config.chunk_tokens,
            chunk_overlap_tokens=config.chunk_overlap_tokens,
            generation=await current_generation(self._res.redis, name),
            documents=await self._res.store.count_documents(name),
            chunks=await self._res.store.count(name),
        )

    async def _require(self, collection: str) -> None:
        _check_name(collection)
        if not await _guarded(self._res.store.exists(collection)):
            raise APIError(404, "collection_not_found", f"no collection {collection!r}")

    async def create_collection(self, body: CreateCollection) -> CollectionInfo:
        s = self._settings
        config = CollectionConfig(
            body.chunk_tokens or s.chunk_tokens,
            s.chunk_overlap_tokens if body.chunk_overlap_tokens is None else body.chunk_overlap_tokens,
        )
        if config.chunk_overlap_tokens >= config.chunk_tokens:
            raise APIError(422, "invalid_request", "chunk_overlap_tokens must be smaller than chunk_tokens")
        async with _dependencies():
            if not await self._res.store.ensure_collection(body.name, s.embedding_dim):
                raise APIError(409, "collection_exists", f"collection {body.name!r} already exists")
            await self._res.configs.set(body.name, config)
            return await self._info(body.name)

    async def list_collections(self) -> list[CollectionInfo]:
        async with _dependencies():
            return [await self._info(name) for name in await self._res.store.list_collections()]

    async def get_collection(self, collection: str) -> CollectionInfo:
        await self._require(collection)
        return await _guarded(self._info(collection))

    async def drop_collection(self, collection: str) -> None:
        await self._require(collection)
        async with _dependencies():
            await self._res.store.drop_collection(collection)
            await self._res.configs.remove(collection)
            # The generation outlives the collection: a cached answer from it must never return.
            await bump_generation(self._res.redis, collection)

    def _check_count(self, count: int) -> None:
        if count > self._settings.max_upload_files:
            raise APIError(
                413,
                "too_many_documents",
                f"at most {self._settings.max_upload_files} files or records per request",
            )
        # Each file or record is at least one document, so past the cap the job is refused whole,
        # at the door; the records of a JSONL file are counted as it loads, and those past it fail.
        if count > self._settings.max_job_documents:
            raise APIError(
                413,
                "too_many_documents",
                f"{count:,} files or records, over the cap of {self._settings.max_job_documents:,}"
                " documents per job; split them into several jobs",
            )

    async def submit_files(self, collection: str, files: list[UploadFile]) -> tuple[str, int]:
        self._check_count(len(files))  # before any file is read
        inputs: list[JobInput] = []
        cap = self._settings.max_file_bytes
        for upload in files:
            name = (upload.filename or "").strip().lstrip("/") or f"upload-{len(inputs)}"
            if upload.size is not None and upload.size > cap:
                # Refused without reading it; the job reports it as failed, the rest go on.
                inputs.append(
                    JobInput(name, error=f"file is {upload.size:,} bytes, over the cap of {cap:,} bytes")
                )
                continue
            inputs.append(JobInput(name, data=await upload.read()))
        return await self._submit(collection, inputs)

    async def submit_records(self, collection: str, records: list[dict[str, Any]]) -> tuple[str, int]:
        self._check_count(len(records))
        inputs = [
            JobInput(self._record_name(n, r), record=r)
            if isinstance(r, dict)
            else JobInput(f"record-{n}", record=r)
            for n, r in enumerate(records)
        ]
        return await self._submit(collection, inputs)

    def _record_name(self, n: int, record: dict[str, Any]) -> str:
        """The record's id, refused here when it is one no document may have: the caller hears
        at once, and the id never reaches a Redis key or a Milvus filter."""
        raw = record.get("_id", record.get("id"))
        if raw is None:  # fails alone in the job, with its reason
            return f"record-{n}"
        return self._doc_id(raw, f"documents.{n}: ")

    def _doc_id(self, raw: object, where: str = "") -> str:
        try:
            return check_doc_id(raw, self._settings.max_doc_id_chars)
        except InvalidDocId as exc:
            raise APIError(422, "invalid_document_id", f"{where}{exc}") from exc

    async def _submit(self, collection: str, inputs: list[JobInput]) -> tuple[str, int]:
        _check_name(collection)
        if not inputs:
            raise APIError(422, "no_documents", "send at least one file or record")
        self._check_count(len(inputs))
        async with _dependencies():
            # Created here, not on the worker, so the caller can list it at once.
            await self._res.store.ensure_collection(collection, self._settings.embedding_dim)
            job_id = await self._res.jobs.create(collection, inputs)
            await enqueue_ingest(self._queue, job_id, self._settings)
        _log.info("ingest_job_queued", job_id=job_id, collection=collection, inputs=len(inputs))
        return job_id, len(inputs)

    async def job_status(self, job_id: str) -> JobStatus:
        view = await _guarded(self._res.jobs.get(job_id))
        if view is None:
            raise APIError(404, "job_not_found", f"no job {job_id!r} (finished jobs are kept for a while)")
        return _job_status(view)

    async def list_jobs(
        self, collections: list[str] | None, state: str | None, offset: int, limit: int
    ) -> JobList:
        views, total = await _guarded(self._res.jobs.list(collections, state, offset, limit))
        return JobList(jobs=[_job_status(v) for v in views], offset=offset, limit=limit, total=total)

    async def list_documents(self, collection: str, offset: int, limit: int) -> DocumentList:
        await self._require(collection)
        docs = await _guarded(self._res.store.list_documents(collection, offset, limit))
        return DocumentList(
            collection=collection,
            offset=offset,
            limit=limit,
            documents=[StoredDocumentInfo.model_validate(d, from_attributes=True) for d in docs],
        )

    async def get_document(self, collection: str, doc_id: str) -> StoredDocumentInfo:
        self._doc_id(doc_id)
        await self._require(collection)
        doc = await _guarded(self._res.store.get_document(collection, doc_id))
        if doc is None:
            raise APIError(404, "document_not_found", f"no document {doc_id!r} in {collection!r}")
        return StoredDocumentInfo.model_validate(doc, from_attributes=True)

    async def delete_document(self, collection: str, doc_id: str) -> None:
        self._doc_id(doc_id)
        await self._require(collection)
        if not await _guarded(self._res.indexer.delete(collection, doc_id)):
            raise APIError(404, "document_not_found", f"no document {doc_id!r} in {collection!r}")


def _job_status(view: JobView) -> JobStatus:
    r = view.report
    return JobStatus(
        job_id=view.job_id,
        collection=view.collection,
        state=view.state,
        inputs=view.inputs,
        attempts=view.attempts,
        documents_done=r.added + r.updated + r.unchanged + r.failed,
        counts=JobCounts(
            added=r.added,
            updated=r.updated,
            unchanged=r.unchanged,
            deleted=r.deleted,
            failed=r.failed,
            chunks=r.chunks,
        ),
        errors=[DocumentError(doc_id=d, error=e) for d, e in sorted(r.errors.items())],
        warnings=r.warnings,
        error=view.error,
        created_at=view.created_at,
        started_at=view.started_at,
        finished_at=view.finished_at,
    )
