"""Loaders run in limited child processes (#27): a file past the memory, CPU or time limit, or
one whose parse kills its process, fails alone, and the next file loads on a new pool. Real
child processes and kernel limits; the runaway callables stand in for a parser gone wrong."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from ingest.config import IngestSettings
from ingest.loaders import LoadError, load_bytes
from ingest.runner import ingest_path
from ingest.sandbox import LoaderPool, SandboxLimits
from services.common.milvus_connect import connect_milvus

# Just under QUARRY_INGEST_MAX_FILE_BYTES' default: a real file the HTML parser cannot hold in 768 MiB.
HTML_BOMB = b"<p>x</p>" * 2_500_000


def _allocate() -> bytearray:
    return bytearray(4 << 30)


def _spin() -> None:
    while True:
        pass


def _sleep() -> None:
    time.sleep(60)


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.parametrize(
    ("runaway", "reason", "cpu_s", "timeout_s"),
    [
        (_allocate, "loader exceeded its memory limit of 256 MiB", 30, 40),
        # The wall-clock limit is set past the CPU one: a busy loop on a shared machine gets
        # less CPU than wall time, and must still be ended by its CPU limit.
        (_spin, "loader exceeded its CPU limit of 1 s", 1, 20),
        (_sleep, "loader exceeded its time limit of 3 s", 30, 3),
        # A death is told from a CPU kill by the time it took, and a loaded machine can take
        # over a second to start a child: the CPU limit is set far from it.
        (_segfault, "loader process died", 30, 40),
    ],
)
def test_a_runaway_load_fails_alone_and_the_pool_goes_on(
    runaway: Callable[[], object], reason: str, cpu_s: int, timeout_s: float
) -> None:
    with LoaderPool(SandboxLimits(memory_mb=256, cpu_s=cpu_s, timeout_s=timeout_s, processes=1)) as pool:
        with pytest.raises(LoadError, match=reason):
            pool.run(runaway)  # _sleep alone would take 60 s; its 3 s limit ends it
        [doc] = pool.run(partial(load_bytes, "after.txt", b"The next file loads.")).documents
        assert doc.text == "The next file loads."


def test_cpu_limit_is_per_document_not_per_process() -> None:
    with LoaderPool(SandboxLimits(cpu_s=1, timeout_s=10, processes=1)) as pool:
        for _ in range(3):  # 3 x 0.6 s of CPU in one child: past 1 s in all, under it in each
            assert pool.run(partial(_burn, 0.6)) == "done"


def _burn(seconds: float) -> str:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return "done"


async def test_quarry_ingest_fails_a_file_past_the_memory_limit_alone(
    tmp_path: Path, ingest_settings: IngestSettings, collection_name: str
) -> None:
    (tmp_path / "bomb.html").write_bytes(HTML_BOMB[: 8 * 300_000])
    (tmp_path / "good.txt").write_text("A good note about the loader pool.")
    settings = ingest_settings.model_copy(update={"load_memory_mb": 128})
    report = await ingest_path(tmp_path, collection_name, settings)
    milvus = connect_milvus(ingest_settings.milvus_uri)
    try:
        assert (report.added, report.failed) == (1, 1), report.errors
        assert "memory limit of 128 MiB" in report.errors["bomb.html"]
    finally:
        if milvus.has_collection(collection_name):
            milvus.drop_collection(collection_name)
        milvus.close()
