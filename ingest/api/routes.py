"""Routes of the ingest API; logic lives in serving.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ingest.api.schemas import (
    CollectionInfo,
    CollectionList,
    CreateCollection,
    Deleted,
    DocumentList,
    DocumentsRequest,
    JobAccepted,
    JobList,
    JobState,
    JobStatus,
    StoredDocumentInfo,
)
from ingest.api.serving import IngestService
from services.common.errors import APIError

router = APIRouter(prefix="/v1")

# Milvus answers no query past 16,384 rows of offset + limit.
_MAX_OFFSET = 15_000


async def get_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest_service
    return service


@router.post("/collections", response_model=CollectionInfo, status_code=201)
async def create_collection(
    body: CreateCollection, service: IngestService = Depends(get_service)
) -> CollectionInfo:
    return await service.create_collection(body)


@router.get("/collections", response_model=CollectionList)
async def list_collections(service: IngestService = Depends(get_service)) -> CollectionList:
    return CollectionList(collections=await service.list_collections())


@router.get("/collections/{collection}", response_model=CollectionInfo)
async def get_collection(collection: str, service: IngestService = Depends(get_service)) -> CollectionInfo:
    return await service.get_collection(collection)


@router.delete("/collections/{collection}", response_model=Deleted)
async def drop_collection(collection: str, service: IngestService = Depends(get_service)) -> Deleted:
    await service.drop_collection(collection)
    return Deleted(deleted=collection)


@router.post("/collections/{collection}/documents", response_model=JobAccepted, status_code=202)
async def add_documents(
    collection: str, request: Request, service: IngestService = Depends(get_service)
) -> JobAccepted:
    """Multipart files (field ``files``) or JSON ``{"documents": [records]}``; answers a job id."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=service.max_files, max_fields=16)
        except MultiPartException as exc:
            raise APIError(400, "invalid_multipart", str(exc)) from exc
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise APIError(422, "no_documents", "multipart body has no file in field 'files'")
        job_id, inputs = await service.submit_files(collection, files)
    elif content_type.startswith("application/json"):
        try:
            body = DocumentsRequest.model_validate_json(
                await _bounded_body(request, service.max_json_body_bytes)
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise APIError(422, "invalid_request", f"{where}: {first['msg']}") from exc
        job_id, inputs = await service.submit_records(collection, body.documents)
    else:
        raise APIError(
            415, "unsupported_media_type", "send multipart/form-data files or application/json records"
        )
    return JobAccepted(job_id=job_id, collection=collection, inputs=inputs, status_url=f"/v1/jobs/{job_id}")


async def _bounded_body(request: Request, max_bytes: int) -> bytes:
    """The body, or 413 once it passes ``max_bytes``: what is past the cap is read and dropped,
    never kept or parsed (answering before the upload ends makes clients see a reset)."""
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size <= max_bytes:
            parts.append(part)
        else:
            parts.clear()
    if size > max_bytes:
        raise _too_large(max_bytes)
    return b"".join(parts)


def _too_large(max_bytes: int) -> APIError:
    return APIError(
        413,
        "payload_too_large",
        f"JSON records body exceeds {max_bytes} bytes; send larger sets as JSONL files",
    )


@router.get("/collections/{collection}/documents", response_model=DocumentList)
async def list_documents(
    collection: str,
    offset: int = Query(0, ge=0, le=_MAX_OFFSET),
    limit: int = Query(100, ge=1, le=1000),
    service: IngestService = Depends(get_service),
) -> DocumentList:
    return await service.list_documents(collection, offset, limit)


# ``:path``: an id may hold "/" (sent as %2F; the server decodes it before routing).
@router.get("/collections/{collection}/documents/{doc_id:path}", response_model=StoredDocumentInfo)
async def get_document(
    collection: str, doc_id: str, service: IngestService = Depends(get_service)
) -> StoredDocumentInfo:
    return await service.get_document(collection, doc_id)


@router.delete("/collections/{collection}/documents/{doc_id:path}", response_model=Deleted)
async def delete_document(
    collection: str, doc_id: str, service: IngestService = Depends(get_service)
) -> Deleted:
    await service.delete_document(collection, doc_id)
    return Deleted(deleted=doc_id)


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    collection: list[str] | None = Query(None, description="Repeatable: jobs of any of these collections."),
    state: JobState | None = Query(None),
    offset: int = Query(0, ge=0, le=_MAX_OFFSET),
    limit: int = Query(50, ge=1, le=500),
    service: IngestService = Depends(get_service),
) -> JobList:
    return await service.list_jobs(collection, state, offset, limit)


@router.get("/jobs/{job_id}", response_model=JobStatus)
async def job_status(job_id: str, service: IngestService = Depends(get_service)) -> JobStatus:
    return await service.job_status(job_id)
