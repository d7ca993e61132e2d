"""Steady client traffic during a fault, and what the clients saw.

A few threads send real HTTP/2 requests in bounded loops (count and time) and record
every answer: status, error code and the ``degraded`` field.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tests.fuzz.openapi_fuzz import envelope_problem

MAX_REQUESTS_PER_THREAD = 5_000
MAX_SECONDS = 900.0
CLIENT_TIMEOUT_S = 260.0


@dataclass(frozen=True)
class Seen:
    at: float  # when the answer (or the failure) came
    started: float
    route: str
    status: int  # 0: no HTTP answer at all (connection refused, reset, timeout)
    code: str = ""  # error code from the envelope, or "degraded:<causes>" on a degraded 200
    envelope_ok: bool = True


@dataclass
class Observations:
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Seen) -> None:
        with self.lock:
            self.seen.append(item)

    def between(self, start: float, end: float) -> list[Seen]:
        """Answers that came in [start, end]."""
        with self.lock:
            return [s for s in self.seen if start <= s.at <= end]

    def started_after(self, start: float) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.started >= start]

    @staticmethod
    def summary(items: list[Seen]) -> dict[str, int]:
        """``{"200": n, "200 degraded:llm": n, "503 rag_unavailable": n, ...}``."""
        return dict(Counter(f"{s.route} {s.status} {s.code}".strip() for s in items))


Request = Callable[[httpx.Client, int], httpx.Response]


def record(route: str, started: float, response: httpx.Response) -> Seen:
    code = ""
    if response.status_code >= 400:
        try:
            code = str(response.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            code = "?"
    elif response.headers.get("content-type", "").startswith("application/json"):
        degraded = response.json().get("degraded") or []
        code = "degraded:" + ",".join(sorted(degraded)) if degraded else ""
    return Seen(
        time.monotonic(), started, route, response.status_code, code, envelope_problem(response) is None
    )


class SteadyLoad:
    """Runs each named request in its own thread until stopped (or its bounds are reached)."""

    # Steady, not saturating: on a small CPU box a faster pace overloads the llm by itself
    # (429s and an open breaker), which would hide what the fault does.
    def __init__(self, requests: dict[str, Request], pause_s: float = 2.0) -> None:
        self.requests = requests
        self.pause_s = pause_s
        self.observations = Observations()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n, r), daemon=True) for n, r in requests.items()
        ]

    def _run(self, route: str, request: Request) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        # Longer than the gateway's own deadline (then 504): a client timeout means a hang.
        with httpx.Client(
            http1=False, http2=True, timeout=httpx.Timeout(CLIENT_TIMEOUT_S, connect=2.0)
        ) as client:
            for n in itertools.islice(itertools.count(), MAX_REQUESTS_PER_THREAD):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    self.observations.add(record(route, started, request(client, n)))
                except httpx.HTTPError as exc:
                    self.observations.add(Seen(time.monotonic(), started, route, 0, type(exc).__name__))
                    self._stop.wait(0.2)  # a dead port fails fast: do not spin
                self._stop.wait(self.pause_s)

    def __enter__(self) -> SteadyLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CLIENT_TIMEOUT_S + 10)
