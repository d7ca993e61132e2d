"""Settings base shared by every service.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix``
(``QUARRY_EMBEDDER_``, ``QUARRY_RAG_``...) so one environment can configure the
whole suite without names colliding.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in containers).")
    port: int = Field(8000, description="Port serving HTTP/1.1 and h2c.")
    workers: int = Field(1, description="Server worker processes; prefer replicas (metrics are per process).")
    log_level: str = Field("info", description="debug, info, warning or error.")
    log_json: bool = Field(True, description="JSON log lines (false: human-readable console).")
