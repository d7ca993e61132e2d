"""Reading a suite service's JSON log from a test."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def lines_for(path: Path, request_id: str, limit_s: float = 10.0) -> list[dict[str, Any]]:
    """The log's lines for ``request_id`` once its access line is there (or at the deadline).

    A service writes its access line after its answer went out, so the caller can hold the
    answer before the line is written (seen in CI on a busy machine).
    """
    deadline = time.monotonic() + limit_s
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines() if request_id in line]
        if any(line.get("event") == "http_request" for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)  # the services are other processes: blocking here stalls none


def access_line(path: Path, request_id: str, limit_s: float = 10.0) -> dict[str, Any] | None:
    """The service's access line for ``request_id``, waited for as ``lines_for`` does."""
    access = [line for line in lines_for(path, request_id, limit_s) if line.get("event") == "http_request"]
    return access[0] if access else None
