from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(8100, description="Port serving HTTP/1.1 and h2c.")
    rag_url: str = Field("http://127.0.0.1:8103", description="rag service (/v1/query, /v1/search).")
    ingest_url: str = Field(
        "http://127.0.0.1:8105", description="Ingest API (/v1/collections/**, /v1/jobs/**)."
    )
    embedder_url: str = Field(
        "", description="Embedder, probed for GET /v1/status only (empty: not shown; rag's checks cover it)."
    )
    llm_url: str = Field("", description="LLM service, probed for GET /v1/status only (empty: not shown).")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Keys, rate-limit windows, token quotas, console sessions."
    )
    redis_failure_policy: Literal["closed", "open"] = Field(
        "closed",
        description="Redis unreachable: closed answers 503; open admits keys seen within "
        "key_cache_ttl_s, without rate limits or quotas.",
    )
    key_cache_ttl_s: float = Field(
        300.0, description="How long a last-known-good key record may admit its key while Redis is down."
    )
    redis_retry_s: float = Field(
        1.0, description="After a Redis failure, skip Redis for this long before trying again."
    )
    query_token_reservation: int = Field(
        2048,
        ge=0,
        description="Tokens a query holds against its key's daily quota until its answer settles them "
        "to what it spent; kept when the client leaves first (default: the bundled LLM's context window, "
        "more than one answer can spend).",
    )
    max_body_bytes: int = Field(1_048_576, description="Request body cap (413) for JSON routes.")
    max_upload_bytes: int = Field(
        52_428_800, description="Request body cap (413) for document uploads to the ingest API."
    )
    request_timeout_s: float = Field(
        120.0, description="Deadline for an upstream answer (streams: for its first byte); 504 past it."
    )
    upstream_timeout_s: float = Field(
        120.0, description="Longest silence between two upstream reads (streams included)."
    )
    cors_origins: list[str] = Field(
        [], description='Origins allowed by CORS, as JSON (["https://app.example"]).'
    )
