"""bf16 against fp32: the real model on real text, passages and questions."""

from __future__ import annotations

import numpy as np
import pytest

from services.embedder.precision import cpu_has_bf16
from services.embedder.torch_model import TorchEmbeddingModel
from tests.embedding_texts import sample_texts

pytestmark = pytest.mark.skipif(
    not cpu_has_bf16(),
    reason="this CPU has no native bf16 (no avx512_bf16, amx_bf16 or Arm bf16 flag): auto runs fp32",
)


def test_bf16_vectors_stay_within_cosine_0_9999_of_fp32() -> None:
    sentences = sample_texts()
    assert len(sentences) > 150
    fp32 = TorchEmbeddingModel("", "cpu", precision="fp32")
    bf16 = TorchEmbeddingModel("", "cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    # Batches of 32, as the batcher runs them: padding in a mixed-length batch counts too.
    exact = np.concatenate([fp32.encode(sentences[i : i + 32]) for i in range(0, len(sentences), 32)])
    fast = np.concatenate([bf16.encode(sentences[i : i + 32]) for i in range(0, len(sentences), 32)])

    cosines = np.sum(exact * fast, axis=1)
    assert float(cosines.min()) >= 0.9999, sentences[int(cosines.argmin())]
    assert not np.array_equal(exact, fast)  # bf16 really ran


def test_auto_takes_bf16_on_this_cpu() -> None:
    assert TorchEmbeddingModel("", "cpu").precision == "bf16"
