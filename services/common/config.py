"""Settings base shared by every service.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix``
(``QUARRY_EMBEDDER_``, ``QUARRY_RAG_``...) so one environment can configure the
whole suite without names colliding.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.unset_when_empty import UNSET_WHEN_EMPTY


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in containers).")
    port: int = Field(8000, description="Port serving HTTP/1.1 and h2c.")
    workers: int = Field(1, description="Server worker processes; prefer replicas (metrics are per process).")
    log_level: str = Field("info", description="debug, info, warning or error.")
    log_json: bool = Field(True, description="JSON log lines (false: human-readable console).")
    metrics_port: Annotated[int | None, UNSET_WHEN_EMPTY] = Field(
        None,
        ge=1,
        le=65535,
        description="Port serving /metrics alone; the API port then serves no /metrics, so a network "
        "policy can let Prometheus reach this port only. Unset or empty: /metrics on the API port.",
    )

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> Self:
        if self.metrics_port is None:
            return self
        if self.metrics_port == self.port:
            raise ValueError("metrics_port must differ from port (leave it empty for /metrics on port)")
        if self.workers != 1:
            # Every worker process has its own registry and would bind the same port.
            raise ValueError("metrics_port needs workers=1; scale with replicas")
        return self
