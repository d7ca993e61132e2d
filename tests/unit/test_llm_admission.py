"""The admission gate: slots, a bounded waiting line, first come first served, nothing leaked."""

from __future__ import annotations

import asyncio

import pytest

from services.llm.admission import AdmissionGate, QueueFull


async def test_slots_then_line_then_refusal() -> None:
    gate = AdmissionGate(slots=2, max_queue=1)
    first, second = await gate.acquire(), await gate.acquire()
    assert (gate.running, gate.waiting) == (2, 0)

    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    with pytest.raises(QueueFull):
        await gate.acquire()

    first.release()
    third = await waiter
    assert (gate.running, gate.waiting) == (2, 0)
    second.release()
    third.release()
    assert gate.running == 0


async def test_release_is_idempotent() -> None:
    gate = AdmissionGate(slots=1, max_queue=0)
    lease = await gate.acquire()
    lease.release()
    lease.release()
    assert gate.running == 0
    again = await gate.acquire()  # the slot came back once, not twice
    with pytest.raises(QueueFull):
        await gate.acquire()
    again.release()


async def test_waiters_are_served_in_arrival_order() -> None:
    gate = AdmissionGate(slots=1, max_queue=3)
    holder = await gate.acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        lease = await gate.acquire()
        order.append(i)
        lease.release()

    tasks = [asyncio.create_task(take(i)) for i in range(3)]
    await asyncio.sleep(0)
    holder.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    gate = AdmissionGate(slots=1, max_queue=1)
    holder = await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    next_waiter = asyncio.create_task(gate.acquire())  # its place is free again
    await asyncio.sleep(0)
    holder.release()
    (await next_waiter).release()
    assert (gate.running, gate.waiting) == (0, 0)


async def test_no_queue_refuses_as_soon_as_slots_are_busy() -> None:
    gate = AdmissionGate(slots=1, max_queue=0)
    lease = await gate.acquire()
    with pytest.raises(QueueFull):
        await gate.acquire()
    lease.release()
