"""Small passes run on one CPU thread: the same vectors, and the thread count is put back."""

from __future__ import annotations

import numpy as np
import torch

from services.embedder.torch_model import SMALL_PASS_TEXTS, TorchEmbeddingModel

QUERY = "Vitamin D deficiency is associated with a higher risk of multiple sclerosis."


def test_a_small_pass_runs_on_one_thread_and_gives_the_same_vectors() -> None:
    model = TorchEmbeddingModel("", "cpu", threads=2, precision="fp32")
    seen: list[int] = []
    forward = model._model.forward  # the test's own wrapper around the model's forward pass

    def counting(*args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return forward(*args, **kwargs)

    model._model.forward = counting
    small = model.encode([QUERY])
    large = model.encode([QUERY] * (SMALL_PASS_TEXTS + 1))
    assert seen == [1, 2]
    assert torch.get_num_threads() == 2  # put back after the small pass
    assert float(np.dot(small[0], large[0])) > 0.99999
