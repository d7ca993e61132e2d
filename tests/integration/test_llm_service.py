"""The LLM service as a real process over HTTP/2, generating with the real SmolLM2 model.

One server per module (one slot, a waiting line of one, small caps so every test stays short);
a second one with a one-second request timeout starts only for the timeout tests.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.cli.suite import Child, free_port
from services.common.http_client import create_http2_client

MODEL = "SmolLM2-135M-Instruct"
PROMPT_PRICE, COMPLETION_PRICE = 0.5, 1.5  # USD per 1k tokens
HI = [{"role": "user", "content": "Hi"}]
# Long, predictable output: good for cancelling and queueing mid-generation.
COUNTING = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]


def _start_server(tmp: Path, **settings: str) -> Iterator[str]:
    port = free_port()
    env = {"QUARRY_LLM_PORT": str(port), "QUARRY_LLM_LOG_JSON": "true"}
    env |= {f"QUARRY_LLM_{name.upper()}": value for name, value in settings.items()}
    url = f"http://127.0.0.1:{port}"
    child = Child("llm", [sys.executable, "-m", "services.llm"], env, f"{url}/health/ready", tmp / "llm.log")
    child.start()
    try:
        deadline = time.monotonic() + 180
        while True:
            assert child.alive(), child.log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "llm service not ready in time"
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        child.stop()


@pytest.fixture(scope="module")
def llm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _start_server(
        tmp_path_factory.mktemp("llm"),
        slots="1",
        max_queue="1",
        context_window="512",
        max_tokens_cap="64",
        retry_after_s="3",
        price_per_1k_prompt_tokens=str(PROMPT_PRICE),
        price_per_1k_completion_tokens=str(COMPLETION_PRICE),
    )


@pytest.fixture(scope="module")
def impatient_llm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _start_server(tmp_path_factory.mktemp("llm_timeout"), request_timeout_s="1", slots="1")


@pytest.fixture
async def client(llm_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with create_http2_client(llm_url, timeout_s=120) as c:
        yield c


async def _metric(url: str, name: str, **labels: str) -> float:
    async with create_http2_client(url) as c:
        text = (await c.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def _until(url: str, name: str, value: float, **labels: str) -> None:
    """Polls a metric until it reaches ``value`` (bounded: the test fails if it never does)."""
    for _ in range(600):
        if await _metric(url, name, **labels) >= value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}{labels} never reached {value}")


async def _idle(url: str) -> None:
    for _ in range(600):
        if await _metric(url, "quarry_llm_requests_in_flight") == 0 and (
            await _metric(url, "quarry_llm_queue_depth") == 0
        ):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("llm service never went idle")


def _sse_payloads(lines: list[str]) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


async def test_non_streaming_answer_with_usage_and_cost(client: httpx.AsyncClient, llm_url: str) -> None:
    cost_before = await _metric(llm_url, "quarry_llm_cost_usd_total", model=MODEL)
    response = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": HI, "max_tokens": 4, "temperature": 0}
    )
    assert response.status_code == 200, response.text
    assert response.http_version == "HTTP/2"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= 4
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    expected = (usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE) / 1000
    cost_after = await _metric(llm_url, "quarry_llm_cost_usd_total", model=MODEL)
    assert cost_after - cost_before == pytest.approx(expected)


async def test_streaming_is_openai_sse_with_done_and_usage(client: httpx.AsyncClient) -> None:
    body = {
        "messages": HI,
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines()]
    payloads = _sse_payloads(lines)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *content_chunks, finish_chunk, usage_chunk = chunks[1:]
    text = "".join(c["choices"][0]["delta"]["content"] for c in content_chunks)
    assert text.strip()
    assert all(c["choices"][0]["finish_reason"] is None for c in content_chunks)
    assert finish_chunk["choices"][0]["delta"] == {}
    assert finish_chunk["choices"][0]["finish_reason"] in {"stop", "length"}
    assert usage_chunk["choices"] == []
    assert 0 < usage_chunk["usage"]["completion_tokens"] <= 4
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_the_model_card_names_the_context_window_and_the_max_tokens_cap(
    client: httpx.AsyncClient,
) -> None:
    card = (await client.get("/v1/models")).json()["data"][0]
    assert (card["id"], card["max_model_len"], card["max_tokens"]) == (MODEL, 512, 64)


async def test_the_openai_client_works_unchanged(llm_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{llm_url}/v1", api_key="unused") as oai:
        models = await oai.models.list()
        assert [m.id for m in models.data] == [MODEL]

        answer = await oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
        )
        assert answer.choices[0].message.content
        assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 4

        stream = await oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage = None
        async for chunk in stream:
            parts.extend(choice.delta.content or "" for choice in chunk.choices)
            usage = chunk.usage or usage
    # Same model, same greedy settings: streaming and not give the same text.
    assert "".join(parts) == answer.choices[0].message.content
    assert usage is not None and usage.completion_tokens == answer.usage.completion_tokens


async def test_stop_sequence_ends_the_answer(client: httpx.AsyncClient) -> None:
    free = await client.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 6, "temperature": 0})
    text = free.json()["choices"][0]["message"]["content"]
    assert len(text) > 2
    stop = text[2]  # a character the unconstrained answer reaches
    stopped = await client.post(
        "/v1/chat/completions", json={"messages": HI, "max_tokens": 6, "temperature": 0, "stop": [stop]}
    )
    choice = stopped.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert stop not in choice["message"]["content"]
    assert text.startswith(choice["message"]["content"])


async def test_seed_makes_sampling_repeatable(client: httpx.AsyncClient) -> None:
    body = {"messages": COUNTING, "max_tokens": 6, "temperature": 1.5, "top_p": 1.0, "seed": 1234}
    first = await client.post("/v1/chat/completions", json=body)
    second = await client.post("/v1/chat/completions", json=body)
    assert (
        first.json()["choices"][0]["message"]["content"] == second.json()["choices"][0]["message"]["content"]
    )


async def test_frequency_penalty_reaches_the_sampler(client: httpx.AsyncClient) -> None:
    # A description repeats ", " and common words within a few tokens; counting did not on every
    # CPU build (one wrote "1234..." with no separator to penalise in 12 tokens).
    prompt = [{"role": "user", "content": "Tell me about granite."}]
    base = {"messages": prompt, "max_tokens": 32, "temperature": 0, "repetition_penalty": 1.0}
    plain = await client.post("/v1/chat/completions", json=base)
    penalised = await client.post("/v1/chat/completions", json={**base, "frequency_penalty": 2.0})
    assert plain.status_code == penalised.status_code == 200
    # A strong penalty on tokens already generated must change the greedy path.
    assert (
        plain.json()["choices"][0]["message"]["content"]
        != penalised.json()["choices"][0]["message"]["content"]
    )


_LONG = "The quick brown fox jumps over the lazy dog. " * 60  # about 600 tokens: over a 512 window


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        (
            {"messages": [{"role": "user", "content": _LONG}], "max_tokens": 16},
            422,
            "context_length_exceeded",
            ["max_tokens is 16", "context window of 512", "prompt has "],
        ),
        ({"messages": HI, "max_tokens": 65}, 422, "max_tokens_too_large", ["65", "cap of 64"]),
        ({"messages": []}, 422, "empty_messages", ["at least one"]),
        (
            {"messages": [{"role": "wizard", "content": "x"}]},
            422,
            "unknown_role",
            ["messages[0].role", "wizard"],
        ),
        ({"messages": HI, "temperature": 3}, 422, "invalid_request", ["temperature"]),
        ({"messages": HI, "frequency_penalty": -2.5}, 422, "invalid_request", ["frequency_penalty"]),
        ({"messages": HI, "n": 2}, 422, "invalid_request", ["n:"]),
        ({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, 422, "too_many_stop_sequences", ["5"]),
        ({"messages": HI, "model": "gpt-9"}, 404, "model_not_found", ["gpt-9", MODEL]),
    ],
)
async def test_bad_requests_get_clear_4xx(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str, says: list[str], stream: bool
) -> None:
    response = await client.post("/v1/chat/completions", json={**body, "stream": stream})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for fragment in says:
        assert fragment in error["message"]


async def test_streaming_client_disconnect_stops_generation(llm_url: str) -> None:
    await _idle(llm_url)
    cancelled = await _metric(llm_url, "quarry_llm_requests_total", outcome="cancelled")
    generated = await _metric(llm_url, "quarry_llm_tokens_total", kind="completion")
    body = {
        "messages": COUNTING,
        "max_tokens": 64,
        "temperature": 0,
        "repetition_penalty": 1.0,
        "stream": True,
    }
    # The client's own connection, closed on leaving: httpx does not reset an abandoned h2 stream.
    async with (
        create_http2_client(llm_url, timeout_s=120) as leaving,
        leaving.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if '"content":"' in line and '"role"' not in line:
                break  # one real token arrived: leave now
    await _until(llm_url, "quarry_llm_requests_total", cancelled + 1, outcome="cancelled")
    await _idle(llm_url)
    assert await _metric(llm_url, "quarry_llm_tokens_total", kind="completion") - generated < 64


async def test_non_streaming_client_disconnect_stops_generation(llm_url: str) -> None:
    await _idle(llm_url)
    cancelled = await _metric(llm_url, "quarry_llm_requests_total", outcome="cancelled")
    gone = {"route": "/v1/chat/completions", "status": "499"}
    answered_gone = await _metric(llm_url, "quarry_http_requests_total", **gone)
    body = {"messages": COUNTING, "max_tokens": 64, "temperature": 0, "repetition_penalty": 1.0}
    async with create_http2_client(llm_url, timeout_s=120) as leaving:
        request = asyncio.create_task(leaving.post("/v1/chat/completions", json=body))
        await _until(llm_url, "quarry_llm_requests_in_flight", 1)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await _until(llm_url, "quarry_llm_requests_total", cancelled + 1, outcome="cancelled")
    # Logged and counted as the client leaving, not as an error.
    await _until(llm_url, "quarry_http_requests_total", answered_gone + 1, **gone)
    await _idle(llm_url)


async def test_full_queue_answers_429_with_retry_after(llm_url: str) -> None:
    await _idle(llm_url)
    rejected = await _metric(llm_url, "quarry_llm_rejected_total")
    long = {"messages": COUNTING, "max_tokens": 64, "temperature": 0, "repetition_penalty": 1.0}
    async with (
        create_http2_client(llm_url, timeout_s=120) as running_client,
        create_http2_client(llm_url, timeout_s=120) as waiting_client,
        create_http2_client(llm_url, timeout_s=120) as refused_client,
        running_client.stream("POST", "/v1/chat/completions", json={**long, "stream": True}) as run,
    ):
        assert run.status_code == 200  # holds the one slot
        waiting = asyncio.create_task(waiting_client.post("/v1/chat/completions", json=long))
        await _until(llm_url, "quarry_llm_queue_depth", 1)

        refused = await refused_client.post("/v1/chat/completions", json=long)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["code"] == "queue_full"
        streamed = await refused_client.post("/v1/chat/completions", json={**long, "stream": True})
        assert streamed.status_code == 429

        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert await _metric(llm_url, "quarry_llm_rejected_total") == rejected + 2
    await _idle(llm_url)
    # Nothing leaked: the slot and the line are free again.
    async with create_http2_client(llm_url, timeout_s=120) as c:
        after = await c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
    assert after.status_code == 200


async def test_request_timeout_is_504_or_an_error_event(impatient_llm_url: str) -> None:
    long = {"messages": COUNTING, "max_tokens": 512, "temperature": 0, "repetition_penalty": 1.0}
    async with create_http2_client(impatient_llm_url, timeout_s=120) as c:
        response = await c.post("/v1/chat/completions", json=long)
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "timeout"
        assert "1 s" in response.json()["error"]["message"]

        async with c.stream("POST", "/v1/chat/completions", json={**long, "stream": True}) as streamed:
            assert streamed.status_code == 200
            payloads = _sse_payloads([line async for line in streamed.aiter_lines()])
    assert payloads[-1] == "[DONE]"
    assert json.loads(payloads[-2])["error"]["code"] == "timeout"
    assert await _metric(impatient_llm_url, "quarry_llm_requests_total", outcome="timeout") == 2
