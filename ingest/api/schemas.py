"""Wire shapes of the ingest API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.vector_schema import COLLECTION_NAME_PATTERN


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=COLLECTION_NAME_PATTERN)
    chunk_tokens: int | None = Field(None, ge=16, le=512, description="Chunk size in model tokens.")
    chunk_overlap_tokens: int | None = Field(None, ge=0, le=256)


class CollectionInfo(BaseModel):
    name: str
    chunk_tokens: int
    chunk_overlap_tokens: int
    generation: int
    documents: int = Field(description="Documents stored now.")
    chunks: int = Field(description="Chunks stored now.")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Records are checked one by one when the job runs, so one bad record fails alone.
    documents: list[dict[str, Any]] = Field(min_length=1, description="BEIR-shaped records.")


class JobAccepted(BaseModel):
    job_id: str
    collection: str
    state: Literal["queued"] = "queued"
    inputs: int
    status_url: str


JobState = Literal["queued", "running", "completed", "failed"]


class JobCounts(BaseModel):
    added: int
    updated: int
    unchanged: int
    deleted: int
    failed: int
    chunks: int


class DocumentError(BaseModel):
    doc_id: str
    error: str


class JobStatus(BaseModel):
    job_id: str
    collection: str
    state: JobState
    inputs: int
    attempts: int
    documents_done: int
    counts: JobCounts
    errors: list[DocumentError]
    warnings: list[str]
    error: str
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobList(BaseModel):
    jobs: list[JobStatus] = Field(description="Newest first.")
    offset: int
    limit: int
    total: int = Field(description="Jobs matching the filters (among the most recent 5,000).")


class StoredDocumentInfo(BaseModel):
    doc_id: str
    title: str
    source: str
    content_hash: str
    metadata: dict[str, Any]


class DocumentList(BaseModel):
    collection: str
    offset: int
    limit: int
    documents: list[StoredDocumentInfo]


class Deleted(BaseModel):
    deleted: str
