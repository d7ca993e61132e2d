"""Loaders run in child processes with memory, CPU and wall-clock limits.

A parser fed a hostile file can allocate without bound, loop, or crash the interpreter; in
a child process that costs the document, not the worker. Each child caps its address space
(``RLIMIT_AS``: an allocation past it raises ``MemoryError``), its CPU time per document
(``RLIMIT_CPU``: the kernel ends it with ``SIGXCPU``) and its wall-clock time per document
(an interval timer whose ``SIGALRM`` ends it even inside C code). A dead child breaks the
pool; the pool is replaced and the job goes on.
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from ingest.loaders import LoadError
from services.common.logs import get_logger

_log = get_logger(__name__)

T = TypeVar("T")

# How long past its own timer a child may take before the parent stops waiting for it.
_GRACE_S = 5.0


@dataclass(frozen=True)
class SandboxLimits:
    """Per-document limits of a loader child (the QUARRY_INGEST_LOAD_* settings)."""

    memory_mb: int = 768
    cpu_s: int = 60
    timeout_s: float = 60.0
    processes: int = 2


def _limit_child(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # A child ended by SIGXCPU would otherwise leave a core file per poison document.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _run_limited(load: Callable[[], T], cpu_s: int, timeout_s: float) -> T:
    # RLIMIT_CPU counts the process's whole life, so each document gets cpu_s from now.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    until = math.ceil(usage.ru_utime + usage.ru_stime + cpu_s)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = until if hard == resource.RLIM_INFINITY else min(until, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    # No handler: SIGALRM's default action ends the process, which a parser stuck in C
    # code cannot delay, as it could a Python-level exception.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return load()
    except MemoryError:
        pass  # leaving the handler frees the traceback, and with it the parse's objects
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    # Raised fresh: sending back the original, with its frames still holding everything the
    # parse built, needs memory the child does not have, and it would die instead.
    raise MemoryError


class LoaderPool:
    """Runs loader calls in limited child processes; ``run`` blocks (call it from a thread)."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # Children are forked from a small server process, not from the worker: they start
        # fast and inherit neither its threads nor its memory.
        context = multiprocessing.get_context("forkserver")
        # Not the default (``__main__``): the worker's own imports would load in every child.
        context.set_forkserver_preload(["ingest.loaders", "pypdf", "bs4"])
        return ProcessPoolExecutor(
            self.limits.processes,
            mp_context=context,
            initializer=_limit_child,
            initargs=(self.limits.memory_mb * 1024 * 1024,),
        )

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:  # another caller may have replaced it already
                self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)

    def run(self, load: Callable[[], T]) -> T:
        """``load()`` in a child; a limit it passes is a ``LoadError`` naming the limit."""
        lim = self.limits
        for attempt in (1, 2):
            pool = self._pool
            started = time.monotonic()
            with self._lock:
                self._in_flight += 1
                shared = self._in_flight > 1
            try:
                future = pool.submit(_run_limited, load, lim.cpu_s, lim.timeout_s)
                return future.result(timeout=lim.timeout_s + _GRACE_S)
            except MemoryError:
                raise LoadError(f"loader exceeded its memory limit of {lim.memory_mb:,} MiB") from None
            except FutureTimeout:
                self._replace(pool)
                raise LoadError(f"loader exceeded its time limit of {lim.timeout_s:g} s") from None
            except BrokenProcessPool:
                elapsed = time.monotonic() - started
                with self._lock:
                    shared = shared or self._in_flight > 1
                self._replace(pool)
                _log.warning("loader_process_died", seconds=round(elapsed, 2), attempt=attempt)
                if elapsed >= lim.timeout_s:
                    raise LoadError(f"loader exceeded its time limit of {lim.timeout_s:g} s") from None
                if elapsed >= lim.cpu_s:
                    raise LoadError(f"loader exceeded its CPU limit of {lim.cpu_s} s") from None
                if not shared:
                    break
                # Another document's child may have broken the pool: once more on the new one.
            finally:
                with self._lock:
                    self._in_flight -= 1
        raise LoadError(
            f"loader process died (past its memory limit of {lim.memory_mb:,} MiB, or a crash in the parser)"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LoaderPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
