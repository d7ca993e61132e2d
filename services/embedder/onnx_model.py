"""ONNX Runtime on CPU: the sentence-transformers model exported once, optionally int8.

The export runs the real model through ``torch.onnx.export`` (pooling included);
int8 adds ``quantize_dynamic`` (per-channel weights, reduced range so AVX2 without
VNNI does not saturate). int8 activations are scaled per batch, so a text's vector
moves slightly with its batch companions; fp32 does not. The result is cached per
model folder, so later starts only load it; files are written under a temporary
name and renamed, so concurrent starts never read half a file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from services.embedder.model import Vectors, default_model_path, load_sentence_transformer

_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEmbeddingModel:
    device = "cpu"

    def __init__(self, model: str, threads: int = 0, cache_dir: str = "", int8: bool = False) -> None:
        import onnxruntime as ort

        source = load_sentence_transformer(model, "cpu")
        self.dimensions: int = int(source.get_embedding_dimension())
        self.max_tokens: int = int(source.max_seq_length)
        self._tokenizer = source.tokenizer
        self.backend = "onnx-int8" if int8 else "onnx"
        self.precision = "int8" if int8 else "fp32"
        path = _exported_model(source, model or default_model_path(), cache_dir, int8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: the embedder shares its cores with the
        # searches it serves (Milvus, rag), and a spinning pool takes them between passes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}

    def count_tokens(self, texts: list[str]) -> list[int]:
        encoded = self._tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: list[str]) -> Vectors:
        features = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np"
        )
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in features.items() if k in self._input_names}
        (vectors,) = self._session.run(["sentence_embedding"], feeds)
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)  # type: ignore[no-any-return]


def _cache_root(cache_dir: str) -> Path:
    return Path(cache_dir) if cache_dir else Path.home() / ".cache" / "quarry" / "onnx"


def _exported_model(source: Any, model_path: str, cache_dir: str, int8: bool) -> Path:
    import onnxruntime
    import torch

    key = f"{os.path.abspath(model_path)}|{torch.__version__}|{onnxruntime.__version__}|{_OPSET}"
    folder = _cache_root(cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:16]
    fp32 = folder / "model.fp32.onnx"
    target = folder / "model.int8.onnx" if int8 else fp32
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.tmp"
    if not fp32.exists():
        partial = fp32.with_name(fp32.name + suffix)
        _export(source, partial)
        os.replace(partial, fp32)
    if int8:
        _quantise(fp32, target, suffix)
    return target


def _export(source: Any, path: Path) -> None:
    import torch

    class _Pooled(torch.nn.Module):
        # The whole sentence-transformers pipeline (transformer + pooling) in one graph.
        def __init__(self) -> None:
            super().__init__()
            self.inner = source

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            features = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            return self.inner(features)["sentence_embedding"]  # type: ignore[no-any-return]

    sample = source.tokenizer(["an example sentence", "another"], padding=True, return_tensors="pt")
    args = tuple(sample.get(name, torch.zeros_like(sample["input_ids"])) for name in _INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    with torch.inference_mode():
        torch.onnx.export(
            _Pooled().eval(),
            args,
            str(path),
            input_names=list(_INPUTS),
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=_OPSET,
            dynamo=False,
        )


def _quantise(fp32: Path, target: Path, suffix: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_name(target.name + suffix)
    quantize_dynamic(
        str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
    )
    os.replace(partial, target)
