"""llama.cpp in-process vs. the same model through the LLM service (streaming), side by side.

    .venv/bin/python -m bench.llm --prompts 4 --max-tokens 128 --rounds 1

Fixed RAG-style prompts (about 500 tokens of context, one question), greedy decoding so every
path produces the same tokens. Three paths, each at concurrency 1 and 4:

- ``llama``: ``Llama.create_completion(stream=True)`` called directly on the backend's context
  and thread (concurrent callers queue for the slot, as they do in the service);
- ``backend``: the service's LlamaCppBackend in this process (its slot pool and token queue);
- ``service``: ``python -m services.llm`` over h2c, SSE parsed by the client.

Time to first token is measured at the caller; decode tokens/s is (tokens - 1) over the time from
first to last token, per request, then averaged. Paths alternate within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from services.cli.suite import Child, start_service
from services.common.http_client import create_http2_client
from services.llm.backends.base import SamplingParams
from services.llm.backends.llamacpp import LlamaCppBackend, default_gguf_path

_TOPICS = ["glaciers", "compilers", "honeybees", "tidal power", "the printing press", "vaccines"]
_REPEAT_PENALTY = 1.1  # the service default; every path uses it so outputs match


def rag_prompts(count: int) -> list[list[dict[str, str]]]:
    prompts = []
    for i in range(count):
        topic = _TOPICS[i % len(_TOPICS)]
        passages = "\n".join(
            f"[{j + 1}] Report {i}-{j} on {topic}: section {j} notes that observations of {topic} in "
            f"region {j} changed by {(i + 3) * (j + 7) % 97} percent over {j + 2} decades, and that "
            f"the teams measuring {topic} recommend review number {i * 31 + j}."
            for j in range(9)
        )
        prompts.append(
            [
                {"role": "system", "content": "Answer from the numbered context; cite passages like [1]."},
                {
                    "role": "user",
                    "content": f"Context:\n{passages}\n\nQuestion: summarise what changed for {topic}.",
                },
            ]
        )
    return prompts


@dataclass
class Sample:
    ttft_s: float
    decode_tok_s: float | None
    tokens: int


def _sample(start: float, stamps: list[float]) -> Sample:
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return Sample(stamps[0] - start, rate, len(stamps))


Runner = Callable[[list[dict[str, str]]], Awaitable[Sample]]


def llama_runner(backend: LlamaCppBackend, max_tokens: int) -> Runner:
    """Raw llama.cpp on the backend's own context and thread, without the service around it.

    The same thread matters: llama.cpp's OpenMP team belongs to its caller thread, and two
    teams in one process slow each other down about 2.5x (see LlamaCppBackend).
    """

    def run(llama: Any, tokens: list[int], stops: list[str], start: float) -> Sample:
        stamps = []
        chunks = llama.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=0,
            stop=stops,
            repeat_penalty=_REPEAT_PENALTY,
            stream=True,
        )
        for chunk in cast(Iterator[Any], chunks):
            if chunk["choices"][0].get("text"):
                stamps.append(time.perf_counter())
        return _sample(start, stamps)

    async def runner(messages: list[dict[str, str]]) -> Sample:
        start = time.perf_counter()  # before the wait for the slot, as the other paths count it
        tokens, stops = backend.encode_prompt(messages)  # the same prompt tokens as the service
        return await backend.call_on_slot(lambda llama: run(llama, tokens, stops, start))

    return runner


def backend_runner(backend: LlamaCppBackend, max_tokens: int) -> Runner:
    params = SamplingParams(max_tokens=max_tokens, temperature=0, repetition_penalty=_REPEAT_PENALTY)

    async def runner(messages: list[dict[str, str]]) -> Sample:
        start = time.perf_counter()
        stamps = [time.perf_counter() async for delta in backend.generate(messages, params) if delta.text]
        return _sample(start, stamps)

    return runner


def service_runner(client: httpx.AsyncClient, max_tokens: int) -> Runner:
    async def runner(messages: list[dict[str, str]]) -> Sample:
        body = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "repetition_penalty": _REPEAT_PENALTY,
            "stream": True,
        }
        start = time.perf_counter()
        stamps = []
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise RuntimeError(f"service stream failed: {event['error']}")
                    choices = event["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        stamps.append(time.perf_counter())
        return _sample(start, stamps)

    return runner


async def _measure(runner: Runner, prompts: list[list[dict[str, str]]], concurrency: int) -> list[Sample]:
    pending = list(prompts)
    samples: list[Sample] = []

    async def worker() -> None:
        while pending:
            samples.append(await runner(pending.pop(0)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def _start_service(slots: int, threads: int, log: Path) -> tuple[Child, str]:
    env = {
        "QUARRY_LLM_SLOTS": str(slots),
        "QUARRY_LLM_THREADS": str(threads),
        "QUARRY_LLM_MAX_QUEUE": "64",
        "QUARRY_LLM_REQUEST_TIMEOUT_S": "3600",  # a loaded machine must not turn samples into 504s
        "QUARRY_LLM_LOG_LEVEL": "warning",
    }
    return start_service("llm", env, log, timeout_s=180)


def _row(name: str, concurrency: int, samples: list[Sample]) -> dict[str, Any]:
    rates = [s.decode_tok_s for s in samples if s.decode_tok_s]
    return {
        "path": name,
        "conc": concurrency,
        "decode_tok_s": statistics.mean(rates) if rates else 0.0,
        "ttft_ms": statistics.mean(s.ttft_s for s in samples) * 1000,
        "tokens": statistics.mean(s.tokens for s in samples),
    }


async def main(args: argparse.Namespace) -> None:
    prompts = rag_prompts(args.prompts)
    backend = LlamaCppBackend(default_gguf_path(), "SmolLM2-135M-Instruct", 2048, args.threads, args.slots)
    lengths = [backend.count_prompt_tokens(p) for p in prompts]
    print(
        f"prompts: {len(prompts)}, prompt tokens {min(lengths)}-{max(lengths)}, max_tokens {args.max_tokens}"
    )
    child, url = _start_service(args.slots, args.threads, Path(tempfile.mkdtemp()) / "llm.log")
    results: dict[tuple[str, int], list[Sample]] = {}
    try:
        async with create_http2_client(url, timeout_s=600) as client:
            runners = {
                "llama": llama_runner(backend, args.max_tokens),
                "backend": backend_runner(backend, args.max_tokens),
                "service": service_runner(client, args.max_tokens),
            }
            warm = rag_prompts(len(prompts) + 1)[-1:]
            for runner in runners.values():
                await _measure(runner, warm, 1)
            for _ in range(args.rounds):
                for concurrency in (1, 4):
                    for name, runner in runners.items():
                        samples = await _measure(runner, prompts, concurrency)
                        results.setdefault((name, concurrency), []).extend(samples)
                        print(f"measured {name} at concurrency {concurrency}", flush=True)
    finally:
        child.stop()
        await backend.aclose()

    rows = [_row(name, conc, samples) for (name, conc), samples in results.items()]
    print("\n| path | concurrency | decode tok/s | TTFT ms | tokens out |\n|---|---:|---:|---:|---:|")
    for r in rows:
        rate, ttft, tokens = r["decode_tok_s"], r["ttft_ms"], r["tokens"]
        print(f"| {r['path']} | {r['conc']} | {rate:.1f} | {ttft:.1f} | {tokens:.0f} |")
    by = {(r["path"], r["conc"]): r for r in rows}
    print("\n| ratio | concurrency | decode tok/s ratio | added TTFT ms |\n|---|---:|---:|---:|")
    for base in ("llama", "backend"):
        for conc in (1, 4):
            if (base, conc) in by and ("service", conc) in by:
                s, b = by[("service", conc)], by[(base, conc)]
                ratio = s["decode_tok_s"] / b["decode_tok_s"] if b["decode_tok_s"] else float("nan")
                print(f"| service / {base} | {conc} | {ratio:.3f} | {s['ttft_ms'] - b['ttft_ms']:+.1f} |")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    # SIGTERM (a timeout wrapper) still runs the finally that stops the service process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main(_parse()))
