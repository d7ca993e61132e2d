"""The vLLM backend on a real GPU; skipped wherever vLLM or CUDA is missing (CI, CPU machines)."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

import pytest

from services.llm.backends.base import SamplingParams


def _gpu_with_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _gpu_with_vllm(), reason="needs vllm (the gpu extra) and a CUDA GPU"),
]

HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
async def backend() -> AsyncIterator[object]:
    from services.llm.backends.vllm import VLLMBackend

    engine = VLLMBackend("", "SmolLM2-135M-Instruct", 2048, 8, 0.5)
    yield engine
    await engine.aclose()


async def test_generates_text_and_finishes(backend: object) -> None:
    from services.llm.backends.vllm import VLLMBackend

    assert isinstance(backend, VLLMBackend)
    assert backend.count_prompt_tokens(HI) > 0
    deltas = [d async for d in backend.generate(HI, SamplingParams(max_tokens=8, temperature=0))]
    assert "".join(d.text for d in deltas).strip()
    assert 0 < sum(d.tokens for d in deltas) <= 8
    assert deltas[-1].finish_reason in {"stop", "length"}


async def test_closing_early_aborts_the_request(backend: object) -> None:
    from services.llm.backends.vllm import VLLMBackend

    assert isinstance(backend, VLLMBackend)
    stream = backend.generate(HI, SamplingParams(max_tokens=256, temperature=0))
    first = await anext(stream)
    assert first.finish_reason is None
    await stream.aclose()
    # The engine keeps serving after an abort.
    again = [d async for d in backend.generate(HI, SamplingParams(max_tokens=4, temperature=0))]
    assert again[-1].finish_reason in {"stop", "length"}
