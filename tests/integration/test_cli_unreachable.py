"""CLI commands run while the suite is not running: one clear line on stderr and exit 1, never a
traceback. Each runs the real ``quarry`` process against a port nothing listens on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.cli.suite import Suite, free_port

EXAMPLES_QA = Path(__file__).resolve().parents[2] / "examples" / "qa" / "docs_qa.jsonl"


def _quarry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from services.cli.main import main; main()", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], says: str) -> None:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 1, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"quarry: cannot reach {says}"), lines[0]
    assert "is the suite running? start it with `quarry up`" in lines[0]


@pytest.fixture
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_ask_without_a_gateway(closed_url: str) -> None:
    done = _quarry("ask", "What does the embedder do?", "--url", closed_url, "--key", "qk_none")
    _assert_one_line(done, f"the gateway at {closed_url}")


def test_eval_answers_without_a_gateway(closed_url: str) -> None:
    done = _quarry("eval", "--answers", str(EXAMPLES_QA), "--url", closed_url, "--key", "qk_none")
    _assert_one_line(done, f"the gateway at {closed_url}")


@pytest.mark.parametrize("command", [["keys", "list"], ["variants", "report"]], ids=" ".join)
def test_redis_commands_without_redis(command: list[str]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/12"
    _assert_one_line(_quarry(*command, "--redis-url", closed), f"Redis at {closed}")


@pytest.mark.parametrize("missing", ["Milvus", "Redis"])
def test_ingest_without_the_suite_fails_at_once(
    missing: str, closed_url: str, tmp_path: Path, redis_url: str
) -> None:
    (tmp_path / "a.txt").write_text("Some text to ingest.")
    closed_redis = closed_url.replace("http://", "redis://")
    env = {
        # Redis answers (the tests' own) unless it is the one missing; Milvus and the embedder never.
        "QUARRY_INGEST_REDIS_URL": closed_redis if missing == "Redis" else redis_url,
        "QUARRY_INGEST_MILVUS_URI": closed_url,
        "QUARRY_INGEST_EMBEDDER_URL": closed_url,
    }
    started = time.monotonic()
    done = _quarry("ingest", str(tmp_path), "--collection", "t_never", env=env)
    # At once, not after the minutes indexing waits out a dependency's outage (dependency_wait_s).
    assert time.monotonic() - started < 60
    _assert_one_line(done, f"{missing} at {closed_redis if missing == 'Redis' else closed_url}")


def test_status_of_a_suite_that_is_not_running_exits_1(tmp_path: Path) -> None:
    # A recorded suite whose every port has nothing behind it (its processes are long gone).
    urls = {
        name: f"http://127.0.0.1:{free_port()}" for name in ("gateway", "embedder", "llm", "rag", "ingest")
    }
    urls["milvus"] = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "suite.json").write_text(json.dumps({"processes": [], "urls": urls}))
    done = _quarry("status", "--data-dir", str(tmp_path))
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.returncode == 1, done.stdout
    assert "not ready" in done.stdout


def test_eval_answers_with_a_refused_key(suite: Suite) -> None:
    # The gateway answers, but refuses every question: one line naming its error, not a traceback.
    done = _quarry("eval", "--answers", str(EXAMPLES_QA), "--url", suite.url("gateway"), "--key", "qk_wrong")
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 1, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    said = f"quarry: the gateway at {suite.url('gateway')} refused the questions: /v1/query answered 401"
    assert lines[0].startswith(said), lines[0]
    assert "invalid_api_key" in lines[0], lines[0]


@pytest.fixture
def html_url() -> Iterator[str]:
    """Another program on the gateway's port: it answers every request with an HTML page."""

    class Page(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(502)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_ask_of_a_port_that_answers_html(html_url: str) -> None:
    done = _quarry("ask", "What does the embedder do?", "--url", html_url, "--key", "qk_none")
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 1, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"quarry: the gateway at {html_url} answered HTTP 502 with a body that is not JSON (text/html)"
        " — is another program listening on that port?"
    ], done.stderr
