"""Admission control: a fixed number of running generations and a bounded line waiting for them."""

from __future__ import annotations

import asyncio


class QueueFull(Exception):
    """Every slot is busy and the waiting line is at its bound."""


class Lease:
    """One running slot; release it exactly once (later calls do nothing)."""

    def __init__(self, gate: AdmissionGate) -> None:
        self._gate: AdmissionGate | None = gate

    def release(self) -> None:
        if self._gate is not None:
            self._gate._release()
            self._gate = None


class AdmissionGate:
    def __init__(self, slots: int, max_queue: int) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._max_queue = max_queue
        self.running = 0
        self.waiting = 0

    async def acquire(self) -> Lease:
        """A slot now, or after waiting in line; raises QueueFull when the line is full."""
        # Semaphore.locked() is also true while others wait, so nobody jumps the line.
        if self._slots.locked() and self.waiting >= self._max_queue:
            raise QueueFull
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return Lease(self)

    def _release(self) -> None:
        self.running -= 1
        self._slots.release()
