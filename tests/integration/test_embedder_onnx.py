"""ONNX Runtime against torch fp32: the real model, exported, on real text; and what ``auto``
picks on this machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.embedder.config import EmbedderSettings
from services.embedder.model import auto_backend, load_model
from services.embedder.onnx_model import OnnxEmbeddingModel
from services.embedder.torch_model import TorchEmbeddingModel
from tests.embedding_texts import sample_texts


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbeddingModel:
    return OnnxEmbeddingModel("", cache_dir=str(tmp_path_factory.mktemp("onnx")))


def test_onnx_vectors_are_torch_fp32_vectors(onnx_model: OnnxEmbeddingModel) -> None:
    texts = sample_texts()
    assert len(texts) > 150
    torch_fp32 = TorchEmbeddingModel("", "cpu", precision="fp32")
    # Batches of 32, as the batcher runs them: padding in a mixed-length batch counts too.
    exact = np.concatenate([torch_fp32.encode(texts[i : i + 32]) for i in range(0, len(texts), 32)])
    onnx = np.concatenate([onnx_model.encode(texts[i : i + 32]) for i in range(0, len(texts), 32)])
    cosines = np.sum(exact * onnx, axis=1)
    assert float(cosines.min()) >= 0.9999, texts[int(cosines.argmin())]
    assert (onnx_model.backend, onnx_model.precision) == ("onnx", "fp32")


def test_a_vector_does_not_depend_on_its_batch(onnx_model: OnnxEmbeddingModel) -> None:
    texts = sample_texts()[:40]
    alone = np.concatenate([onnx_model.encode([t]) for t in texts])
    together = onnx_model.encode(texts)
    assert float(np.sum(alone * together, axis=1).min()) >= 0.99999


def test_a_second_start_reads_the_export(tmp_path: Path) -> None:
    first = OnnxEmbeddingModel("", cache_dir=str(tmp_path))
    exported = list(tmp_path.rglob("*.onnx"))
    assert len(exported) == 1
    written = exported[0].stat().st_mtime_ns
    again = OnnxEmbeddingModel("", cache_dir=str(tmp_path))
    assert exported[0].stat().st_mtime_ns == written
    text = ["Where are the exported files kept?"]
    assert np.array_equal(first.encode(text), again.encode(text))


def test_auto_serves_what_this_cpu_runs_fastest() -> None:
    model = load_model(EmbedderSettings())
    assert model.backend == auto_backend("cpu", "auto")


def test_auto_falls_back_to_torch_when_the_export_cannot_be_written(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    model = load_model(EmbedderSettings(onnx_cache_dir=str(blocked), precision="fp32"))
    assert (model.backend, model.precision) == ("torch", "fp32")
    assert model.encode(["still embeds"]).shape == (1, model.dimensions)
