"""Starts the whole suite as child processes on one machine and stops it cleanly.

Used by ``quarry up`` and by the integration tests, so both exercise the same
processes, ports and settings.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ingest.config import IngestSettings
from ingest.queue import live_workers


class SuiteError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    gateway: int = 8100
    embedder: int = 8101
    llm: int = 8102
    rag: int = 8103
    milvus: int = 19539
    ingest: int = 8105

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop children in order
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would; for fault tests."""
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def ready(self) -> bool:
        """Its readiness URL answers 200; a child without one is ready while it runs."""
        if self.ready_url is None:
            return self.alive()
        try:
            return httpx.get(self.ready_url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, deadline: float, ready: Callable[[], bool] | None = None) -> None:
        """Polls ``ready`` (default :meth:`ready`) until it holds; fails fast if the child exits."""
        check = ready or self.ready
        while time.monotonic() < deadline:
            if not self.alive():
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise SuiteError(f"{self.name} exited during start; log tail:\n{tail}")
            if check():
                return
            time.sleep(0.2)
        raise SuiteError(f"{self.name} was not ready in time; see {self.log_path}")


def start_service(
    name: str, env: dict[str, str], log_path: Path, timeout_s: float = 300.0
) -> tuple[Child, str]:
    """One service alone on a free port, started and ready; returns it and its URL (for benchmarks)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", f"services.{name}"]
    child = Child(
        name, argv, {f"QUARRY_{name.upper()}_PORT": str(port), **env}, f"{url}/health/ready", log_path
    )
    child.start()
    try:
        child.wait_ready(time.monotonic() + timeout_s)
    except BaseException:
        child.stop()
        raise
    return child, url


@dataclass
class Suite:
    data_dir: Path
    redis_url: str = "redis://127.0.0.1:6379/0"
    ports: Ports = field(default_factory=Ports)
    extra_env: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{getattr(self.ports, service)}"

    @property
    def lexical_index(self) -> Path:
        return self.data_dir / "lexical.sqlite3"

    @property
    def milvus_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports.milvus}"

    def service_env(self) -> dict[str, str]:
        p = self.ports
        env = {
            "QUARRY_EMBEDDER_PORT": str(p.embedder),
            "QUARRY_LLM_PORT": str(p.llm),
            "QUARRY_RAG_PORT": str(p.rag),
            "QUARRY_RAG_EMBEDDER_URL": self.url("embedder"),
            "QUARRY_RAG_LLM_URL": self.url("llm"),
            "QUARRY_RAG_MILVUS_URI": self.milvus_uri,
            "QUARRY_RAG_REDIS_URL": self.redis_url,
            "QUARRY_GATEWAY_PORT": str(p.gateway),
            "QUARRY_GATEWAY_RAG_URL": self.url("rag"),
            "QUARRY_GATEWAY_REDIS_URL": self.redis_url,
            "QUARRY_GATEWAY_EMBEDDER_URL": self.url("embedder"),
            "QUARRY_GATEWAY_LLM_URL": self.url("llm"),
            "QUARRY_INGEST_MILVUS_URI": self.milvus_uri,
            # Milvus Lite scores BM25 in Python: the suite keeps the terms in SQLite FTS5 too.
            "QUARRY_INGEST_LEXICAL_INDEX": str(self.lexical_index),
            "QUARRY_INGEST_REDIS_URL": self.redis_url,
            "QUARRY_INGEST_EMBEDDER_URL": self.url("embedder"),
            "QUARRY_INGEST_PORT": str(p.ingest),
            # One queue per suite, so two suites sharing a Redis never take each other's jobs.
            "QUARRY_INGEST_QUEUE_NAME": f"quarry-ingest-{p.ingest}",
            "QUARRY_GATEWAY_INGEST_URL": self.url("ingest"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        env.update(self.extra_env)
        return env

    def _child(self, name: str, argv: list[str], ready_url: str | None) -> Child:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child = Child(name, argv, self.service_env(), ready_url, logs / f"{name}.log")
        self.children[name] = child
        return child

    def define(self) -> None:
        py = sys.executable
        milvus = shutil.which("milvus-lite") or str(Path(py).with_name("milvus-lite"))
        self._child(
            "milvus",
            [
                milvus,
                "server",
                "--data-dir",
                str(self.data_dir / "milvus"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.milvus),
            ],
            None,
        )
        for name in ("embedder", "llm", "rag", "gateway"):
            self._child(name, [py, "-m", f"services.{name}"], f"{self.url(name)}/health/ready")
        self._child("ingest", [py, "-m", "ingest.api"], f"{self.url('ingest')}/health/ready")
        self._child("ingest-worker", [py, "-m", "ingest.worker"], None)

    def start(self, timeout_s: float = 180.0) -> None:
        if not self.children:
            self.define()
        deadline = time.monotonic() + timeout_s
        try:
            # Milvus and the model servers load in parallel; rag and gateway need them ready.
            for stage in (("milvus", "embedder", "llm"), ("rag", "ingest", "ingest-worker"), ("gateway",)):
                for name in stage:
                    self.children[name].start()
                for name in stage:
                    self.wait_ready(name, deadline)
        except BaseException:
            self.stop()
            raise

    def restart(self, name: str, timeout_s: float = 120.0) -> None:
        self.children[name].start()
        self.wait_ready(name, time.monotonic() + timeout_s)

    def wait_ready(self, name: str, deadline: float) -> None:
        self.children[name].wait_ready(deadline, lambda: self._ready(name))

    def _ready(self, name: str) -> bool:
        if name == "milvus":  # no HTTP health: ready when it accepts connections
            try:
                with socket.create_connection(("127.0.0.1", self.ports.milvus), timeout=0.5):
                    return True
            except OSError:
                return False
        child = self.children[name]
        if name == "ingest-worker" and child.process is None:
            # Not our child (`quarry status` from another shell): the worker has no port, but
            # every live worker reports in to the job queue in Redis.
            return _live_workers(self.redis_url, child.env["QUARRY_INGEST_QUEUE_NAME"]) > 0
        return child.ready()

    def status(self) -> dict[str, str]:
        return {name: ("ready" if self._ready(name) else "not ready") for name in self.children}

    def stop(self) -> None:
        for name in reversed(list(self.children)):
            self.children[name].stop()


def _live_workers(redis_url: str, queue_name: str) -> int:
    return asyncio.run(live_workers(IngestSettings(redis_url=redis_url, queue_name=queue_name)))
