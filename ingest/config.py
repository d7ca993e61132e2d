"""Settings of the ingest API, its workers and the local runner (``QUARRY_INGEST_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ingest.loaders import DEFAULT_MAX_JSONL_RECORDS, DEFAULT_MAX_PDF_PAGES, LoadLimits
from ingest.sandbox import SandboxLimits
from services.common.config import ServiceSettings
from services.common.vector_schema import MAX_DOC_ID_CHARS


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_INGEST_", extra="ignore", frozen=True)

    port: int = Field(8105, description="Port of the ingest API.")
    milvus_uri: str = Field("http://127.0.0.1:19539", description="Milvus (Lite server or cluster) URI.")
    milvus_token: str = Field("", description="Milvus token (user:password), if it needs one.")
    lexical_index: str = Field(
        "",
        description=(
            "SQLite file where collections created here keep their BM25 terms beside Milvus Lite,"
            " which scores BM25 slowly; each collection names it, for rag and every writer."
            " Empty: Milvus' own BM25 (a Milvus cluster's)."
        ),
    )
    dense_index: str = Field(
        "AUTOINDEX",
        description="Dense index type for new collections (AUTOINDEX; HNSW or IVF_FLAT on standalone).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis: job queue, job records, generations."
    )
    embedder_url: str = Field("http://127.0.0.1:8101", description="Embedder service base URL.")
    embedding_model: str = Field("all-MiniLM-L6-v2", description="Model name sent to the embedder.")
    embedding_dim: int = Field(384, description="Dimensions of the embedding model's vectors.")
    chunk_tokens: int = Field(200, description="Default chunk size in model tokens (per collection too).")
    chunk_overlap_tokens: int = Field(32, description="Default chunk overlap in model tokens.")
    max_file_bytes: int = Field(
        20 * 1024 * 1024, description="Largest file accepted; larger ones fail alone."
    )
    max_upload_files: int = Field(1000, description="Most files or records in one ingest request.")
    max_job_documents: int = Field(
        100_000,
        ge=1,
        description="Most documents in one job: a request or `quarry ingest` run with more files (or "
        "records) is refused; JSONL records past it fail, unindexed.",
    )
    max_json_body_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1,
        description="Largest JSON records body, refused (413) before it is parsed: parsing costs many "
        "times its size in memory. Larger sets go as JSONL files.",
    )
    max_doc_id_chars: int = Field(
        MAX_DOC_ID_CHARS,
        ge=1,
        le=MAX_DOC_ID_CHARS,
        description=(
            "Longest document id: a JSON body holding a longer one is refused (422);"
            " a file or JSONL record fails alone."
        ),
    )
    max_jsonl_records: int = Field(
        DEFAULT_MAX_JSONL_RECORDS,
        ge=1,
        description="Records read from one JSONL file; the rest are skipped, with a warning.",
    )
    max_pdf_pages: int = Field(
        DEFAULT_MAX_PDF_PAGES,
        ge=1,
        description="Pages read from one PDF; the rest are not extracted, with a warning (truncated).",
    )
    load_timeout_s: float = Field(
        60.0, gt=0, description="Wall-clock time one file may take to load; a slower one fails alone."
    )
    load_cpu_s: int = Field(
        60, ge=1, description="CPU seconds one file may take to load; past it, it fails alone."
    )
    load_memory_mb: int = Field(
        768,
        ge=64,
        description="Address space of a loader process, in MiB; a file whose parse needs more fails alone.",
    )
    loader_processes: int = Field(
        2, ge=1, description="Loader processes per worker (or `quarry ingest` run)."
    )
    max_document_chunks: int = Field(
        5000, ge=1, description="Most chunks one document may make; a longer document fails alone."
    )
    max_document_chars: int = Field(
        2_000_000,
        ge=1,
        description="Most characters of text one document may hold; a longer document fails alone.",
    )
    max_job_warnings: int = Field(
        200, ge=0, description="Warnings kept in a job's record; later ones are only counted."
    )
    batch_documents: int = Field(
        64, description="Documents indexed together (one embed fan-out, one upsert)."
    )
    queue_name: str = Field("quarry-ingest", description="Name of the Redis job queue (saq).")
    worker_concurrency: int = Field(2, description="Jobs one worker process runs at once.")
    job_heartbeat_s: int = Field(
        30, description="A job silent this long is taken as dead and re-run by another worker."
    )
    job_timeout_s: float = Field(
        3600.0,
        gt=0,
        description=(
            "Wall-clock time a job may run, from its first attempt's start across every retry (and a "
            "`quarry ingest` run); past it the job fails (job_timeout), not retried."
        ),
    )
    job_retries: int = Field(5, description="Attempts per job before it is marked failed.")
    dependency_wait_s: float = Field(
        300.0,
        description="How long indexing waits out an unavailable embedder or Milvus before the attempt fails.",
    )
    sweep_interval_s: int = Field(5, description="How often workers look for jobs of dead workers.")
    job_ttl_s: int = Field(7 * 24 * 3600, description="How long a finished job's record is kept.")

    def load_limits(self) -> LoadLimits:
        return LoadLimits(
            self.max_file_bytes, self.max_jsonl_records, self.max_doc_id_chars, self.max_pdf_pages
        )

    def sandbox_limits(self) -> SandboxLimits:
        return SandboxLimits(self.load_memory_mb, self.load_cpu_s, self.load_timeout_s, self.loader_processes)
