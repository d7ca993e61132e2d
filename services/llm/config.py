from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.config import ServiceSettings


class LLMSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_LLM_", extra="ignore", frozen=True)

    port: int = 8102
    backend: Literal["llamacpp", "vllm"] = Field(
        "llamacpp", description="llamacpp (CPU) or vllm (GPU, needs the gpu extra)."
    )
    model: str = Field(
        "", description="GGUF path (llamacpp) or model id/folder (vllm); empty: bundled SmolLM2-135M GGUF."
    )
    model_name: str = Field("SmolLM2-135M-Instruct", description="Model id served in answers and /v1/models.")
    context_window: int = Field(2048, description="Tokens of prompt plus completion one request may use.")
    max_tokens_cap: int = Field(512, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(256, description="max_tokens when a request gives none.")
    threads: int = Field(
        0,
        description="llama.cpp threads per slot; 0: the usable CPUs (affinity, cgroup limit) over slots.",
    )
    slots: int = Field(
        1, ge=1, description="Requests generated at once (llama.cpp contexts; vLLM max_num_seqs)."
    )
    max_queue: int = Field(
        16, ge=0, description="Requests that may wait for a slot; past it: 429 with Retry-After."
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with a 429.")
    request_timeout_s: float = Field(
        120.0, gt=0, description="Longest a request may take, queue wait included (then 504)."
    )
    repeat_penalty: float = Field(
        1.1, gt=0, description="Repetition penalty when a request sets none (small models loop without)."
    )
    price_per_1k_prompt_tokens: float = Field(
        0.0, ge=0, description="USD per 1,000 prompt tokens, for the cost estimate metric."
    )
    price_per_1k_completion_tokens: float = Field(
        0.0, ge=0, description="USD per 1,000 completion tokens, for the cost estimate metric."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vLLM: share of GPU memory the engine may take."
    )
