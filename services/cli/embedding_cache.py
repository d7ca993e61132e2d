"""Embedding caches for evaluation and tuning, on disk.

Evaluation and tuning embed the same corpus again and again; on a CPU that costs minutes each
time, so vectors are kept under ``.quarry/cache/embeddings/``:

- :func:`embed_cached`: a whole list of texts embedded in-process with the embedder's model code,
  one ``.npy`` file per (model, list of texts) (the one-chunk-per-doc ablation, benchmarks);
- :class:`VectorCache` and :class:`CachingEmbeddingsClient`: one vector per (model, text) in a
  SQLite file, filled through the embedder *service*; the client is what ``quarry eval`` injects
  into the ingest pipeline, so its chunks are embedded once and any rerun, whatever its chunking,
  re-embeds only the chunk texts it has not seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common.embeddings_client import EmbeddingsClient

DEFAULT_CACHE_DIR = Path(".quarry/cache/embeddings")
CHUNK_CACHE_FILE = "chunks.sqlite3"


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

    # The embedder's own pick for this machine: its backends agree within cosine 0.9999.
    encoder = load_model(EmbedderSettings(model=model))
    vectors = np.concatenate(
        [encoder.encode(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, vectors)
    partial.replace(path)
    return vectors


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class VectorCache:
    """Vectors by (model, text) in one SQLite file; ``model`` names everything that shapes them.

    Vectors are stored as float32, what the embedder computes and Milvus keeps, so a cached
    vector is the one the service sent. ``hits`` and ``misses`` count lookups since opening.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the threads the async client hands lookups to, under a lock.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, text_sha256 BLOB NOT NULL,"
            " vector BLOB NOT NULL, PRIMARY KEY (model, text_sha256))"
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, model: str, texts: list[str]) -> list[list[float] | None]:
        """The cached vector of each text, None where there is none."""
        keys = [_text_key(t) for t in texts]
        found: dict[bytes, list[float]] = {}
        with self._lock:
            # SQLite's default cap on bound variables is 999 (older builds); 500 keys a query.
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                rows = self._db.execute(
                    "SELECT text_sha256, vector FROM vectors WHERE model = ? AND text_sha256 IN "
                    f"({','.join('?' * len(part))})",
                    [model, *part],
                ).fetchall()
                found.update((key, np.frombuffer(blob, dtype=np.float32).tolist()) for key, blob in rows)
            vectors = [found.get(k) for k in keys]
            hit = sum(v is not None for v in vectors)
            self.hits += hit
            self.misses += len(vectors) - hit
        return vectors

    def put(self, model: str, texts: list[str], vectors: list[list[float]]) -> None:
        rows = [
            (model, _text_key(t), np.asarray(v, dtype=np.float32).tobytes())
            for t, v in zip(texts, vectors, strict=True)
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                row = self._db.execute("SELECT count(*) FROM vectors").fetchone()
            else:
                row = self._db.execute("SELECT count(*) FROM vectors WHERE model = ?", [model]).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachingEmbeddingsClient(EmbeddingsClient):
    """An :class:`EmbeddingsClient` that asks the embedder only for texts ``cache`` lacks.

    Built with the same arguments as the client it stands in for (ingest's: its URL, model name,
    timeout and bulk priority), so what reaches the embedder is what ingest would send.
    ``cache_model`` names the served model (name, backend, precision: see ``quarry eval``).
    """

    def __init__(self, *args: Any, cache: VectorCache, cache_model: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache = cache
        self._cache_model = cache_model

    async def embed(self, texts: list[str]) -> list[list[float]]:
        cached = await asyncio.to_thread(self._cache.get, self._cache_model, texts)
        missing = [i for i, vector in enumerate(cached) if vector is None]
        if missing:
            fresh = await super().embed([texts[i] for i in missing])
            await asyncio.to_thread(self._cache.put, self._cache_model, [texts[i] for i in missing], fresh)
            for i, vector in zip(missing, fresh, strict=True):
                cached[i] = vector
        return [vector for vector in cached if vector is not None]
