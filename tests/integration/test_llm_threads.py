"""llama.cpp's threads come from the CPUs the process may use, not every core the host has."""

from __future__ import annotations

import os

from services.llm.backends.llamacpp import LlamaCppBackend


def test_threads_follow_a_narrowed_affinity_set() -> None:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        backend = LlamaCppBackend("", "smollm2", 512, threads=0, slots=1)
    finally:
        os.sched_setaffinity(0, before)
    assert backend.threads_per_slot == 1


def test_a_set_thread_count_wins() -> None:
    backend = LlamaCppBackend("", "smollm2", 512, threads=3, slots=1)
    assert backend.threads_per_slot == 3
