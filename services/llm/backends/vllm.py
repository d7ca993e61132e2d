"""vLLM backend: the AsyncLLM engine in-process (continuous batching, paged attention on a GPU).

vLLM comes only with the ``gpu`` extra, so everything from it is imported when the backend is built.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

from services.llm.backends.base import SamplingParams, TextDelta

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


class VLLMBackend:
    def __init__(
        self,
        model: str,
        model_id: str,
        context_window: int,
        max_num_seqs: int,
        gpu_memory_utilization: float,
    ) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        source = model or DEFAULT_MODEL
        args = AsyncEngineArgs(
            model=source,
            served_model_name=[model_id],
            max_model_len=context_window,
            max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self._engine: Any = AsyncLLM.from_engine_args(args)
        # The model's own chat template, applied here so prompt length is known before admission.
        self._tokenizer: Any = AutoTokenizer.from_pretrained(source)
        self.model_id = model_id
        self.context_window = context_window

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._prompt_ids(messages))

    async def generate(
        self, messages: list[dict[str, str]], params: SamplingParams
    ) -> AsyncGenerator[TextDelta, None]:
        from vllm import SamplingParams as EngineSamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sampling = EngineSamplingParams(
            n=1,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=params.stop or None,
            seed=params.seed,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            repetition_penalty=params.repetition_penalty,
            output_kind=RequestOutputKind.DELTA,  # only the new text and tokens each step
        )
        request_id = f"quarry-{uuid.uuid4().hex}"
        prompt = TokensPrompt(prompt_token_ids=self._prompt_ids(messages))
        finished = False
        try:
            async for output in self._engine.generate(prompt, sampling, request_id):
                completion = output.outputs[0]
                finished = bool(output.finished)
                reason = completion.finish_reason if finished else None
                yield TextDelta(completion.text, reason, tokens=len(completion.token_ids))
        finally:
            if not finished:
                # Frees the sequence's KV blocks now; the engine would otherwise decode for nobody.
                await self._engine.abort(request_id)

    async def aclose(self) -> None:
        self._engine.shutdown()
