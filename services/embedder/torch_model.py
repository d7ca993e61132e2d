"""sentence-transformers on torch: fp16 on CUDA, bf16 autocast on CPUs that have it, else fp32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from services.embedder.model import Vectors, load_sentence_transformer
from services.embedder.precision import Precision, resolve_precision

# A pass of this many texts or fewer (a query, a few sentences) runs on one CPU thread: it gains
# little from more, and on cores shared with other work every thread it waits for costs it.
SMALL_PASS_TEXTS = 4


class TorchEmbeddingModel:
    backend = "torch"

    def __init__(self, model: str, device: str, threads: int = 0, precision: Precision = "auto") -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.device = device
        self.precision: str = resolve_precision(precision, device)
        self._model: Any = load_sentence_transformer(model, device)
        if self.precision == "fp16":
            # Halves memory and uses tensor cores; embeddings are re-normalised in fp32 below.
            self._model.half()
        self._device_type = torch.device(device).type
        self.dimensions: int = int(self._model.get_embedding_dimension())
        self.max_tokens: int = int(self._model.max_seq_length)
        self._tokenizer = self._model.tokenizer

    def count_tokens(self, texts: list[str]) -> list[int]:
        encoded = self._tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self._device_type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def _threads_for(self, texts: int) -> Iterator[None]:
        # The batcher's two lanes call this from two threads at once: each puts back the count
        # it read, and one that reads 1 (the other lane holds it) leaves it alone, so the count
        # always returns to the backend's.
        import torch

        if self._device_type != "cpu" or texts > SMALL_PASS_TEXTS or torch.get_num_threads() == 1:
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def encode(self, texts: list[str]) -> Vectors:
        # One call is one forward pass: the batcher already sized the batch. Autocast is
        # per thread, so it is entered here, on the thread that runs the pass.
        with self._autocast(), self._threads_for(len(texts)):
            vectors = self._model.encode(
                texts,
                batch_size=max(1, len(texts)),
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)  # type: ignore[no-any-return]
