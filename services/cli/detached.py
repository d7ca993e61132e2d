"""A suite left running by ``quarry up --detach-after-ready``, and how ``quarry down`` stops it.

``up`` writes ``<data dir>/suite.json`` as it returns: each child's name, pid and start time
(last started last), and the services' URLs. ``down`` stops those processes in reverse order,
as Ctrl-C stops a suite in the foreground (SIGTERM to the child's process group, SIGKILL after
a grace period), and only where the pid still belongs to the process ``up`` started: a pid
the system has since given to another process is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from services.cli.suite import Child, Ports

PID_FILE = "suite.json"


class DamagedPidFile(ValueError):
    """The pid file is there but not as ``up`` writes it."""


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    # Clock ticks since boot when the process started (Linux's /proc/PID/stat); None elsewhere.
    started: int | None


@dataclass(frozen=True)
class DetachedSuite:
    processes: list[Recorded]
    urls: dict[str, str]


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from its state on (the name before it may hold spaces); None without it."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def _start_time(pid: int) -> int | None:
    stat = _stat_fields(pid)
    return int(stat[19]) if stat is not None and len(stat) > 19 else None


def write(data_dir: Path, children: list[Child], urls: dict[str, str]) -> Path:
    """Records the running ``children`` (in start order) and ``urls``; the file's path."""
    processes = [
        Recorded(c.name, c.process.pid, _start_time(c.process.pid))
        for c in children
        if c.process is not None and c.alive()
    ]
    path = data_dir / PID_FILE
    path.write_text(json.dumps({"processes": [asdict(p) for p in processes], "urls": urls}, indent=2))
    return path


def read(data_dir: Path) -> DetachedSuite | None:
    """What ``up`` recorded; None when nothing is (never detached, or stopped since)."""
    path = data_dir / PID_FILE
    try:
        raw = json.loads(path.read_text())
        processes = [Recorded(str(p["name"]), int(p["pid"]), p["started"]) for p in raw["processes"]]
        return DetachedSuite(processes, dict(raw["urls"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise DamagedPidFile(f"{path} cannot be read ({type(exc).__name__}: {exc})") from exc


def read_if_readable(data_dir: Path) -> DetachedSuite | None:
    """What ``up`` recorded, or None when nothing is or its file cannot be read: for commands
    that only look for a suite's ports (a damaged file tells them nothing either way)."""
    try:
        return read(data_dir)
    except DamagedPidFile:
        return None


def ports(suite: DetachedSuite) -> Ports:
    """The ports the recorded suite serves on (``up --free-ports`` picks them at start)."""
    known = {f.name for f in fields(Ports)}
    found = {name: urlparse(url).port for name, url in suite.urls.items() if name in known}
    return Ports(**{name: port for name, port in found.items() if port is not None})


def running(process: Recorded) -> bool:
    """Whether the recorded process still runs (a zombie does not) and is the one recorded."""
    stat = _stat_fields(process.pid)
    if stat is None:  # no /proc: whether the pid exists is all there is to go on
        try:
            os.kill(process.pid, 0)
        except OSError:
            return False
        return True
    if stat[0] == "Z":
        return False
    return process.started is None or _start_time(process.pid) == process.started


def alive(suite: DetachedSuite) -> list[Recorded]:
    return [p for p in suite.processes if running(p)]


def stop(data_dir: Path, grace_s: float = 10.0) -> list[str]:
    """Stops the recorded suite, last started first; the names of the processes stopped."""
    suite = read(data_dir)
    if suite is None:
        return []
    stopped = []
    for process in reversed(suite.processes):
        if not running(process):
            continue
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while running(process) and time.monotonic() < deadline:
            time.sleep(0.1)
        if running(process):
            _signal_group(process.pid, signal.SIGKILL)
        stopped.append(process.name)
    (data_dir / PID_FILE).unlink(missing_ok=True)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each child leads a process group of its own (Child.start), which holds its workers too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
