"""The dependency guard: timeouts, retries only when idempotent, breaker opens and recovers."""

from __future__ import annotations

import asyncio

import pytest

from services.rag.rag_metrics import CIRCUIT_OPEN
from services.rag.resilience import DependencyUnavailable, Guard, GuardPolicy, circuit_breakers


class Down(Exception):
    pass


class NotFound(Exception):
    pass


class Flaky:
    """Fails the first ``failures`` calls with ``Down``, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise Down("connection refused")
        return "ok"


def _guard(name: str, retries: int = 1, threshold: int = 2, reset_s: float = 0.2) -> Guard:
    return Guard(name, circuit_breakers(threshold, reset_s), GuardPolicy(1.0, retries, 0.001), (Down,))


async def test_idempotent_calls_are_retried() -> None:
    flaky = Flaky(failures=1)
    assert await _guard("t_retry").call(flaky, idempotent=True) == "ok"
    assert flaky.calls == 2


async def test_non_idempotent_calls_are_not_retried() -> None:
    flaky = Flaky(failures=1)
    with pytest.raises(DependencyUnavailable) as info:
        await _guard("t_noretry").call(flaky, idempotent=False)
    assert info.value.dependency == "t_noretry"
    assert flaky.calls == 1


async def test_timeout_is_a_failure() -> None:
    async def hang() -> str:
        await asyncio.sleep(10)
        return "late"

    guard = Guard("t_timeout", circuit_breakers(5, 1), GuardPolicy(0.01, 0, 0.001), (Down,))
    with pytest.raises(DependencyUnavailable, match="TimeoutError"):
        await guard.call(hang, idempotent=True)


async def test_breaker_opens_then_recovers_without_restart() -> None:
    guard = _guard("t_breaker", retries=0, threshold=2, reset_s=0.2)
    down = Flaky(failures=10**6)
    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            await guard.call(down, idempotent=False)
    assert CIRCUIT_OPEN.labels("t_breaker")._value.get() == 1
    with pytest.raises(DependencyUnavailable, match="circuit open"):
        await guard.call(down, idempotent=False)
    assert down.calls == 2  # the open breaker did not call the dependency
    await asyncio.sleep(0.25)
    assert await guard.call(Flaky(failures=0), idempotent=False) == "ok"
    assert CIRCUIT_OPEN.labels("t_breaker")._value.get() == 0


async def test_other_errors_pass_through_and_do_not_open_the_breaker() -> None:
    guard = _guard("t_passthrough", retries=3, threshold=1)
    calls = 0

    async def missing() -> str:
        nonlocal calls
        calls += 1
        raise NotFound("no such collection")

    for _ in range(3):
        with pytest.raises(NotFound):
            await guard.call(missing, idempotent=True)
    assert calls == 3  # not retried, and the breaker (threshold 1) never opened


def test_not_loaded_is_recognised_through_the_cause_chain() -> None:
    from pymilvus.exceptions import MilvusException

    from services.common.milvus_connect import needs_load
    from services.rag.retrieval.retriever import RetrievalUnavailable

    def wrapped(code: int) -> RetrievalUnavailable:
        try:
            try:
                raise MilvusException(code=code, message="collection released")
            except MilvusException as exc:
                raise RetrievalUnavailable(str(exc)) from exc
        except RetrievalUnavailable as outer:
            return outer

    assert needs_load(wrapped(101))
    assert not needs_load(wrapped(2))
    assert not needs_load(RetrievalUnavailable("connection refused"))
    looped = wrapped(2)
    assert looped.__cause__ is not None
    looped.__cause__.__cause__ = looped  # a cycle must end the walk, not hang it
    assert not needs_load(looped)
