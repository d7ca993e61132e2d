"""Guards around rag's dependencies: a timeout per attempt, retries with jitter for
idempotent calls only, and a circuit breaker (purgatory) per dependency.

An open breaker fails calls at once instead of letting every request wait out a
timeout on a dependency known to be down; after ``reset_s`` it lets calls through
again (half-open) and closes on the first success, so recovery needs no restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from services.rag import rag_metrics

T = TypeVar("T")


class DependencyUnavailable(Exception):
    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason


@dataclass(frozen=True)
class GuardPolicy:
    timeout_s: float
    retries: int = 0
    backoff_s: float = 0.05


class Guard:
    """One dependency. ``failures`` are the exceptions that mean "the dependency is down";
    anything else (a missing collection, a bad request) passes through and counts as an answer.
    """

    def __init__(
        self,
        name: str,
        breakers: AsyncCircuitBreakerFactory,
        policy: GuardPolicy,
        failures: tuple[type[Exception], ...],
    ) -> None:
        self.name = name
        self._breakers = breakers
        self._policy = policy
        self._failures: tuple[type[Exception], ...] = (*failures, TimeoutError)

    async def call(self, fn: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        try:
            breaker = await self._breakers.get_breaker(self.name)
            passthrough: BaseException | None = None
            async with breaker:
                try:
                    return await self._attempts(fn, idempotent)
                except self._failures:
                    raise
                except Exception as exc:  # the dependency answered; the breaker sees a success
                    passthrough = exc
            raise passthrough
        except OpenedState as exc:
            raise DependencyUnavailable(self.name, "circuit open") from exc
        except self._failures as exc:
            raise DependencyUnavailable(
                self.name, type(exc).__name__ + (f": {exc}" if str(exc) else "")
            ) from exc

    async def _attempts(self, fn: Callable[[], Awaitable[T]], idempotent: bool) -> T:
        # Retrying a generation would pay for it twice (and it may still be running).
        attempts = 1 + (self._policy.retries if idempotent else 0)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=self._policy.backoff_s, max=self._policy.backoff_s * 8),
            retry=retry_if_exception_type(self._failures),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with asyncio.timeout(self._policy.timeout_s):
                    return await fn()
        raise AssertionError("unreachable: tenacity reraises the last failure")


def named_guard(
    breakers: AsyncCircuitBreakerFactory, name: str, policy: GuardPolicy, *failures: type[Exception]
) -> Guard:
    """A guard whose breaker starts out reported closed in the metrics."""
    rag_metrics.CIRCUIT_OPEN.labels(name).set(0)
    return Guard(name, breakers, policy, failures)


def circuit_breakers(failure_threshold: int, reset_s: float) -> AsyncCircuitBreakerFactory:
    """A breaker factory whose state changes are exported as ``quarry_rag_circuit_open``."""
    factory = AsyncCircuitBreakerFactory(default_threshold=failure_threshold, default_ttl=reset_s)

    def on_event(name: str, kind: str, event: Any) -> None:
        if kind == "state_changed":
            rag_metrics.CIRCUIT_OPEN.labels(name).set(1 if event.state == "opened" else 0)

    factory.add_listener(on_event)
    return factory
