"""Chat completions: validation, admission, then a backend's deltas shaped as OpenAI answers or SSE."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from services.common.errors import APIError, error_body
from services.common.logs import get_logger
from services.llm.admission import AdmissionGate, Lease, QueueFull
from services.llm.backends.base import GenerationBackend, SamplingParams, TextDelta
from services.llm.config import LLMSettings
from services.llm.metrics import IN_FLIGHT, QUEUE_DEPTH, REJECTED, GenerationRecord, Prices
from services.llm.schemas import (
    ROLES,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ResponseMessage,
    Usage,
)

_log = get_logger(__name__)

_MAX_STOP_SEQUENCES = 4  # OpenAI's limit


@dataclass(frozen=True)
class PreparedChat:
    messages: list[dict[str, str]]
    params: SamplingParams
    prompt_tokens: int
    arrived: float  # perf_counter() at arrival: time to first token counts the queue wait
    deadline: float  # event loop time by which the whole request must be done


@dataclass(frozen=True)
class OpenStream:
    """An admitted streaming request: its SSE lines and the slot it holds until they end."""

    events: AsyncGenerator[str, None]
    lease: Lease


class ChatService:
    def __init__(self, backend: GenerationBackend, settings: LLMSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._gate = AdmissionGate(settings.slots, settings.max_queue)
        self._prices = Prices(settings.price_per_1k_prompt_tokens, settings.price_per_1k_completion_tokens)
        QUEUE_DEPTH.set_function(lambda: self._gate.waiting)
        IN_FLIGHT.set_function(lambda: self._gate.running)

    def _prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        arrived = time.perf_counter()
        model_id = self.backend.model_id
        if request.model and request.model != model_id:
            raise APIError(
                404, "model_not_found", f"model {request.model!r} is not served here; try {model_id!r}"
            )
        if not request.messages:
            raise APIError(422, "empty_messages", "messages must hold at least one message")
        for i, message in enumerate(request.messages):
            if message.role not in ROLES:
                raise APIError(
                    422,
                    "unknown_role",
                    f"messages[{i}].role {message.role!r} is not one of {', '.join(ROLES)}",
                )
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in request.messages
        ]
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if len(stop) > _MAX_STOP_SEQUENCES:
            raise APIError(422, "too_many_stop_sequences", f"stop holds {len(stop)} sequences; at most 4")
        max_tokens = request.max_completion_tokens or request.max_tokens or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_cap:
            raise APIError(
                422,
                "max_tokens_too_large",
                f"max_tokens {max_tokens} exceeds this server's cap of {self.settings.max_tokens_cap}",
            )
        prompt_tokens = self.backend.count_prompt_tokens(messages)
        window = self.backend.context_window
        if prompt_tokens + max_tokens > window:
            raise APIError(
                422,
                "context_length_exceeded",
                f"prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                f"{prompt_tokens + max_tokens} exceeds the context window of {window}",
            )
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=[s for s in stop if s],
            seed=request.seed,
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            repetition_penalty=request.repetition_penalty or self.settings.repeat_penalty,
        )
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        return PreparedChat(messages, params, prompt_tokens, arrived, deadline)

    async def _admit(self, prepared: PreparedChat) -> Lease:
        try:
            async with asyncio.timeout_at(prepared.deadline):
                return await self._gate.acquire()
        except QueueFull:
            REJECTED.inc()
            raise APIError(
                429,
                "queue_full",
                f"{self.settings.slots} generations running, {self._gate.waiting} waiting; retry later",
                headers={"retry-after": str(self.settings.retry_after_s)},
            ) from None
        except TimeoutError:
            raise APIError(504, "timeout", self._timeout_message("waiting for a slot")) from None

    def _timeout_message(self, where: str) -> str:
        return f"request timed out after {self.settings.request_timeout_s:g} s {where}"

    async def _generation(self, prepared: PreparedChat) -> AsyncGenerator[TextDelta, None]:
        """The backend's deltas until the deadline; records the request however it ends."""
        record = GenerationRecord(self.backend.model_id, prepared.prompt_tokens, prepared.arrived)
        outcome = "error"
        try:
            async with aclosing(self.backend.generate(prepared.messages, prepared.params)) as deltas:
                while True:
                    try:
                        async with asyncio.timeout_at(prepared.deadline):
                            delta = await anext(deltas)
                    except StopAsyncIteration:
                        break
                    record.delta(delta.tokens)
                    yield delta
            outcome = "completed"
        except TimeoutError:
            outcome = "timeout"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"  # the client went away: generation stopped with it
            raise
        finally:
            cost = record.finish(outcome, self._prices)
            _log.info(
                "generation",
                outcome=outcome,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cost_usd=cost,
            )

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        prepared = self._prepare(request)
        lease = await self._admit(prepared)
        parts: list[str] = []
        finish: str | None = None
        count = 0
        try:
            async with aclosing(self._generation(prepared)) as deltas:
                async for delta in deltas:
                    parts.append(delta.text)
                    count += delta.tokens
                    finish = delta.finish_reason or finish
        except TimeoutError:
            raise APIError(504, "timeout", self._timeout_message(f"after {count} tokens")) from None
        finally:
            lease.release()
        usage = Usage(
            prompt_tokens=prepared.prompt_tokens,
            completion_tokens=count,
            total_tokens=prepared.prompt_tokens + count,
        )
        return ChatCompletionResponse(
            id=_completion_id(),
            created=int(time.time()),
            model=self.backend.model_id,
            choices=[Choice(message=ResponseMessage(content="".join(parts)), finish_reason=finish or "stop")],
            usage=usage,
        )

    async def open_stream(self, request: ChatCompletionRequest) -> OpenStream:
        # Validate and admit before the first byte, so refusals are real 4xx answers, not broken streams.
        prepared = self._prepare(request)
        lease = await self._admit(prepared)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return OpenStream(self._sse(prepared, lease, include_usage), lease)

    async def _sse(
        self, prepared: PreparedChat, lease: Lease, include_usage: bool
    ) -> AsyncGenerator[str, None]:
        cid, created, model = _completion_id(), int(time.time()), self.backend.model_id

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage)
            # Like OpenAI: "usage": null on every chunk but the last when usage was asked for.
            return f"data: {body.model_dump_json(exclude=None if include_usage else {'usage'})}\n\n"

        count = 0
        finish: str | None = None
        try:
            yield chunk([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
            async with aclosing(self._generation(prepared)) as deltas:
                async for delta in deltas:
                    count += delta.tokens
                    finish = delta.finish_reason or finish
                    if delta.text:
                        yield chunk([ChunkChoice(delta=DeltaMessage(content=delta.text))])
        except TimeoutError:
            # Headers are gone already: say it in the stream, as OpenAI and vLLM do.
            error = error_body("timeout", self._timeout_message(f"after {count} tokens"))
            yield f"data: {json.dumps(error)}\n\n"
            yield "data: [DONE]\n\n"
            return
        finally:
            lease.release()  # free the slot as soon as generation ends, not when the last byte is sent
        yield chunk([ChunkChoice(delta=DeltaMessage(), finish_reason=finish or "stop")])
        if include_usage:
            total = prepared.prompt_tokens + count
            yield chunk(
                [], Usage(prompt_tokens=prepared.prompt_tokens, completion_tokens=count, total_tokens=total)
            )
        yield "data: [DONE]\n\n"


def _completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"
