"""h2load (nghttp2's native HTTP/2 load generator) as a bench driver.

A Python client costs more CPU per request than a lean service does to answer it, so on
a small machine it decides the figures it is meant to measure. h2load does not: one C
thread drives every connection. Install it with ``apt-get install nghttp2-client``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class H2LoadMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Run:
    latencies_s: list[float]  # one per completed request, in the order they finished
    seconds: float  # the measured duration
    failed: int  # requests without a 2xx answer

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.seconds


def available() -> bool:
    return shutil.which("h2load") is not None


def run(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    connections: int,
    streams: int = 1,
    seconds: float | None = None,
    requests: int | None = None,
    warm_up_s: float = 1.0,
    cpus: set[int] | None = None,
) -> Run:
    """POSTs ``body`` to ``url`` over h2c from ``connections`` connections with ``streams`` each.

    Duration mode (``seconds``) or count mode (``requests``); every answer must be a 2xx.
    ``cpus`` confines h2load to those CPUs (by default it runs where the scheduler puts it).
    """
    if not available():
        raise H2LoadMissing("h2load not found: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory() as tmp:
        body_path, log_path = Path(tmp, "body"), Path(tmp, "log")
        body_path.write_bytes(body)
        cmd = ["h2load", "-c", str(connections), "-m", str(streams), "-d", str(body_path)]
        cmd += ["--log-file", str(log_path)]
        for name, value in headers.items():
            cmd += ["-H", f"{name}: {value}"]
        if seconds is not None:
            # h2load takes whole seconds, or milliseconds with a unit.
            cmd += ["-D", f"{round(seconds * 1000)}ms", "--warm-up-time", f"{round(warm_up_s * 1000)}ms"]
        else:
            cmd += ["-n", str(requests)]
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
        done = subprocess.run([*cmd, url], capture_output=True, text=True, check=False, preexec_fn=pin)
        out = done.stdout + done.stderr
        if "Application protocol: h2c" not in out:
            raise RuntimeError(f"h2load did not speak h2c:\n{out}")
        rows = [line.split("\t") for line in log_path.read_text().splitlines() if line]
    ok = [int(r[2]) / 1e6 for r in rows if 200 <= int(r[1]) < 300]
    finished = re.search(r"finished in ([\d.]+)(s|ms),", out)
    assert finished is not None, out
    measured = float(finished.group(1)) * (0.001 if finished.group(2) == "ms" else 1.0)
    return Run(latencies_s=ok, seconds=measured, failed=len(rows) - len(ok))
