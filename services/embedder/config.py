from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings
from services.embedder.precision import Precision

Backend = Literal["auto", "torch", "onnx", "onnx-int8"]


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_EMBEDDER_", extra="ignore", frozen=True)

    port: int = 8101
    model: str = Field(
        "", description="A sentence-transformers folder or model id; empty: the bundled all-MiniLM-L6-v2."
    )
    model_name: str = Field("all-MiniLM-L6-v2", description="Model name echoed in responses.")
    backend: Backend = Field(
        "auto",
        description=(
            "torch, onnx (CPU fp32), onnx-int8 (CPU, approximate) or auto: torch on CUDA and on"
            " a CPU with native bf16, else onnx (torch's fp32 vectors, faster), else torch."
        ),
    )
    precision: Precision = Field(
        "auto",
        description=(
            "torch backend: fp32, bf16 (autocast) or auto: fp16 on CUDA, bf16 on a CPU with"
            " native bf16 (AVX512-BF16, AMX, Arm BF16), else fp32."
        ),
    )
    device: str = Field("auto", description="auto (cuda when present, else cpu), cpu, cuda, cuda:N.")
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads for the model; 0: the CPUs the process may use (affinity, cgroup limit).",
    )
    onnx_cache_dir: str = Field(
        "", description="Where the exported ONNX model is kept; empty: ~/.cache/quarry/onnx."
    )
    batching: bool = Field(
        True, description="Merge concurrent requests into one forward pass (false: one request per pass)."
    )
    max_batch_size: int = Field(32, gt=0, description="Most texts in one batch.")
    max_batch_tokens: int = Field(
        16384, gt=0, description="Most padded tokens (texts x longest) in one batch."
    )
    bulk_batch_tokens: int = Field(
        1024,
        gt=0,
        description=(
            "Most padded tokens in one batch of bulk texts (ingest); bulk passes run beside"
            " query passes, on their own thread."
        ),
    )
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long an idle batcher waits for more texts before running a batch."
    )
    max_queue_items: int = Field(
        4096, gt=0, description="Texts waiting at most; beyond it requests get 429 with Retry-After."
    )
    max_items_per_request: int = Field(2048, gt=0, description="Most texts in one request.")

    @model_validator(mode="after")
    def _request_fits_queue(self) -> Self:
        # A request larger than the whole queue could never be admitted: say so at start.
        if self.max_items_per_request > self.max_queue_items:
            raise ValueError("max_items_per_request must not exceed max_queue_items")
        return self
