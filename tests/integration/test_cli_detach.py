"""``quarry up --detach-after-ready`` returns with the suite still running, ``quarry status``
sees it, ``quarry up`` from the same data dir refuses to start a second one, and ``quarry
down`` stops every process it started. A real suite, started by the real ``quarry`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.cli import detached


def _quarry(*args: str, redis_url: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from services.cli.main import main; main()", *args],
        env={**os.environ, "QUARRY_REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    detached.stop(tmp_path)  # whatever the test left running, even when it failed


def test_detach_after_ready_leaves_the_suite_running_until_quarry_down(
    data_dir: Path, redis_url: str
) -> None:
    up = _quarry(
        "up",
        "--data-dir",
        str(data_dir),
        "--examples",
        str(data_dir / "none"),
        "--ask",
        "",
        "--free-ports",
        "--detach-after-ready",
        redis_url=redis_url,
        timeout_s=600,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "quarry down" in up.stdout

    recorded = detached.read(data_dir)
    assert recorded is not None
    names = [p.name for p in recorded.processes]
    assert names == ["milvus", "embedder", "llm", "rag", "gateway", "ingest", "ingest-worker"]
    assert detached.alive(recorded) == recorded.processes  # `up` has exited; they all still run
    gateway = recorded.urls["gateway"]
    assert httpx.get(f"{gateway}/health/ready", timeout=30).status_code == 200

    # `ask` without --url finds the detached suite's gateway (on a free port, not 8100): the
    # suite holds no documents, so that gateway, having taken the dev key, says so.
    asked = _quarry("ask", "What does the embedder do?", "--data-dir", str(data_dir), redis_url=redis_url)
    assert "collection_not_found" in asked.stdout, asked.stdout + asked.stderr

    status = _quarry("status", "--data-dir", str(data_dir), redis_url=redis_url)
    assert status.returncode == 0
    assert "not ready" not in status.stdout, status.stdout  # the recorded ports, not the defaults

    again = _quarry("up", "--data-dir", str(data_dir), "--free-ports", redis_url=redis_url)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "quarry down" in again.stderr and "Traceback" not in again.stderr

    down = _quarry("down", "--data-dir", str(data_dir), redis_url=redis_url)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not detached.alive(recorded)
    assert detached.read(data_dir) is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway}/health/live", timeout=5)
    assert "no suite running" in _quarry("down", "--data-dir", str(data_dir), redis_url=redis_url).stdout
