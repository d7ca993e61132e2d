"""bf16 against fp32: the real model on real text, passages and questions.

The sentences of examples/docs, and the QA set's questions and reference answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.sentences import is_heading, split_sentences
from services.embedder.precision import cpu_has_bf16
from services.embedder.torch_model import TorchEmbeddingModel

_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.skipif(
    not cpu_has_bf16(),
    reason="this CPU has no native bf16 (no avx512_bf16, amx_bf16 or Arm bf16 flag): auto runs fp32",
)


def _texts() -> list[str]:
    found = []
    for page in sorted((_EXAMPLES / "docs").glob("*.md")):
        found += [s for s in split_sentences(page.read_text()) if not is_heading(s)]
    for line in (_EXAMPLES / "qa" / "docs_qa.jsonl").read_text().splitlines():
        case = json.loads(line)
        found += [case["question"], *(r["text"] for r in case["reference"])]
    return found


def test_bf16_vectors_stay_within_cosine_0_9999_of_fp32() -> None:
    sentences = _texts()
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
