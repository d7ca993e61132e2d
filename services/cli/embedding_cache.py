"""Embeds texts in-process with the embedder's own model code, cached on disk by content.

Evaluation and tuning embed the same corpus again and again; on a CPU that costs
minutes each time, so vectors are kept under ``.quarry/cache/`` keyed by model and texts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

DEFAULT_CACHE_DIR = Path(".quarry/cache/embeddings")


def cache_key(model: str, texts: list[str]) -> str:
    digest = hashlib.sha256(model.encode())
    for text in texts:
        digest.update(b"\x00" + text.encode())
    return digest.hexdigest()[:32]


def embed_cached(
    texts: list[str], model: str = "", cache_dir: Path = DEFAULT_CACHE_DIR, batch_size: int = 64
) -> npt.NDArray[np.float32]:
    """Normalised vectors for ``texts`` (model truncates to its token limit, like ``truncate: true``)."""
    path = cache_dir / f"{cache_key(model or 'default', texts)}.npy"
    if path.exists():
        return np.load(path)  # type: ignore[no-any-return]
    from services.embedder.config import EmbedderSettings
    from services.embedder.model import load_model

    # The torch backend: the vectors the embedder serves by default on CPU and GPU.
    encoder = load_model(EmbedderSettings(model=model, backend="torch"))
    vectors = np.concatenate(
        [encoder.encode(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, vectors)
    partial.replace(path)
    return vectors
