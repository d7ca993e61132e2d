"""The loader fuzz: a corpus of hostile files mixed with good ones, through the real ingest API,
queue, worker and Milvus Lite (#27). Every job completes in one attempt, every good document is
stored and found by search, every hostile one that cannot load is named in the job's errors, and
the peak RSS of the worker, alone and with its loader processes, stays under 1 GiB.

``make test`` sends a small corpus; ``make fuzz`` sets ``QUARRY_FUZZ_HOSTILE_FILES=240`` (the
figures are in docs/reliability.md). Files go in jobs of ``_JOB_FILES``, one after another, so
the shared test Redis never holds the whole corpus at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from ingest.chunking import chunker_for
from ingest.config import IngestSettings
from ingest.doc_ids import shown_name
from ingest.loaders import load_bytes
from ingest.sandbox import LoaderPool
from services.cli.suite import Suite
from services.common.milvus_expr import field_in
from tests.fuzz.hostile import wait_for_job
from tests.fuzz.hostile_files import CorpusFile, corpus

HOSTILE = int(os.environ.get("QUARRY_FUZZ_HOSTILE_FILES", "22"))
GOOD = max(5, HOSTILE // 6)
# The huge kinds at full size only: a small run keeps each kind but not its weight.
SCALE = 1.0 if HOSTILE >= 200 else 0.1
SEED = int(os.environ.get("QUARRY_FUZZ_SEED", "20240601"))
_JOB_FILES = 40
_PEAK_RSS_LIMIT = 1 << 30


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def _reset_peak(pid: int) -> bool:
    """Starts the kernel's peak-RSS count (VmHWM) again from now; False where it cannot."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``: the loader pool's forkserver and the children it forks."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


class _TreeMemory:
    """Samples the worker and every process below it (its loader pool) every ``interval_s``.

    The worker's own peak is the kernel's exact VmHWM. A loader child can be replaced (a poison
    file kills it) and takes its VmHWM with it, so each child's last VmHWM read is kept: a peak
    reached in the last ``interval_s`` of its life is missed. The tree's peak is the largest sum
    over one sample, of RSS (which counts pages the children share with their forkserver once
    per process) and of PSS (which shares them out).
    """

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.child_hwm_kib: dict[int, int] = {}
        self.tree_rss_kib = 0
        self.tree_pss_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _TreeMemory:
        for child in _descendants(self.pid):
            _reset_peak(child)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = pss = 0
            for pid in [self.pid, *_descendants(self.pid)]:
                try:
                    rss += _vm_kib(pid, "VmRSS")
                    pss += _pss_kib(pid)
                    if pid != self.pid:
                        self.child_hwm_kib[pid] = _vm_kib(pid, "VmHWM")
                except (OSError, AssertionError):  # it ended between the listing and the read
                    continue
            self.tree_rss_kib = max(self.tree_rss_kib, rss)
            self.tree_pss_kib = max(self.tree_pss_kib, pss)
            self.samples += 1
            self._stop.wait(self.interval_s)


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _stored(milvus: Any, collection: str, doc_ids: list[str]) -> set[str]:
    doc_ids = [d for d in doc_ids if d == shown_name(d)]  # an invalid id cannot be stored
    found: set[str] = set()
    for start in range(0, len(doc_ids), 100):
        rows = milvus.query(
            collection,
            filter=field_in("doc_id", doc_ids[start : start + 100]),
            output_fields=["doc_id"],
            consistency_level="Strong",
        )
        found |= {r["doc_id"] for r in rows}
    return found


def _error_for(f: CorpusFile, errors: dict[str, str]) -> str | None:
    """The file's error: under its name, one of its lines, or the id of the record it held."""
    name = shown_name(f.uploaded_as)
    lines = (v for k, v in errors.items() if k.startswith(name + " line "))
    return errors.get(name) or errors.get(shown_name(f.doc_id)) or next(lines, None)


def _document_times(files: list[CorpusFile]) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """The slowest loads and splits, timed here as the worker runs them: each file loaded in a
    loader pool with the worker's default limits, each document split in this process."""
    settings = IngestSettings()
    chunker = chunker_for(settings.chunk_tokens, settings.chunk_overlap_tokens)
    loads, splits = [], []
    with LoaderPool(settings.sandbox_limits()) as pool:
        for f in files:
            label = f"{f.kind}: {shown_name(f.name)[:60]}"
            started = time.perf_counter()
            try:
                documents = pool.run(partial(load_bytes, f.name, f.data, settings.load_limits())).documents
            except Exception:  # a failure is timed like a success
                documents = []
            loads.append((time.perf_counter() - started, label))
            started = time.perf_counter()
            for doc in documents:
                if len(doc.text) <= settings.max_document_chars:
                    chunker.split(doc)
            splits.append((time.perf_counter() - started, label))
    return sorted(loads, reverse=True)[:3], sorted(splits, reverse=True)[:3]


def test_hostile_files_never_break_a_job(suite: Suite, milvus: Any, collection_name: str) -> None:
    files = corpus(HOSTILE, GOOD, seed=SEED, scale=SCALE)
    worker = suite.children["ingest-worker"].process
    assert worker is not None
    peak_from_now = _reset_peak(worker.pid)
    ingest = suite.url("ingest")
    errors: dict[str, str] = {}
    problems: list[str] = []
    job_seconds: list[float] = []
    started = time.monotonic()
    with httpx.Client(timeout=300.0) as client, _TreeMemory(worker.pid) as tree:
        for start in range(0, len(files), _JOB_FILES):
            batch = files[start : start + _JOB_FILES]
            upload = [("files", (f.name, f.data, "application/octet-stream")) for f in batch]
            accepted = client.post(f"{ingest}/v1/collections/{collection_name}/documents", files=upload)
            assert accepted.status_code == 202, accepted.text[:500]
            job = wait_for_job(client, ingest, accepted.json()["job_id"], timeout_s=900.0)
            if job["state"] != "completed" or job["attempts"] != 1:
                problems.append(
                    f"job {job['job_id']}: {job['state']}, {job['attempts']} attempts, {job['error']}"
                )
            errors |= {e["doc_id"]: e["error"] for e in job["errors"]}
            job_seconds.append(job["finished_at"] - job["started_at"])
        seconds = time.monotonic() - started
        peak_kib = _vm_kib(worker.pid, "VmHWM")
        stored = _stored(milvus, collection_name, [f.doc_id for f in files])
        for f in files:
            error = _error_for(f, errors)
            if f.expect == "error" and error is None:
                problems.append(f"{f.kind} {shown_name(f.name)!r}: not named in errors")
            if f.expect in ("good", "indexed") and f.doc_id not in stored:
                problems.append(f"{f.kind} {shown_name(f.name)!r}: not stored ({error})")
            if f.expect == "either" and error is None and f.doc_id not in stored:
                problems.append(f"{f.kind} {shown_name(f.name)!r}: neither stored nor named in errors")
            if f.expect == "good":
                body = {"query": f.marker, "collection": collection_name, "mode": "bm25", "top_k": 3}
                hits = (
                    client.post(f"{suite.url('rag')}/v1/search", json=body).raise_for_status().json()["hits"]
                )
                if f.doc_id not in [h["doc_id"] for h in hits]:
                    problems.append(f"good file {f.name!r}: not found by searching for {f.marker}")
    outcome = Counter(
        (f.kind, "error" if _error_for(f, errors) else "stored" if f.doc_id in stored else "?") for f in files
    )
    megabytes = sum(len(f.data) for f in files) / 1e6
    since = "since the fuzz began" if peak_from_now else "since the worker started"
    child_peak_kib = max(tree.child_hwm_kib.values(), default=0)
    timed_out = sorted(k for k, v in errors.items() if "time limit" in v or "CPU limit" in v)
    print(
        f"\nloader fuzz: {HOSTILE} hostile + {GOOD} good files ({megabytes:.1f} MB)"
        f" in {-(-len(files) // _JOB_FILES)} jobs, {seconds:.0f} s; problems: {len(problems)}"
        f"\n  peak memory ({since}): worker alone {peak_kib / 1024:.0f} MiB (VmHWM);"
        f" largest loader process {child_peak_kib / 1024:.0f} MiB (VmHWM, {len(tree.child_hwm_kib)} seen);"
        f" worker + loader processes together {tree.tree_rss_kib / 1024:.0f} MiB RSS,"
        f" {tree.tree_pss_kib / 1024:.0f} MiB PSS (largest of {tree.samples} samples)"
        f"\n  longest job {max(job_seconds):.1f} s (limit {IngestSettings().job_timeout_s:g} s);"
        f" documents stopped at a loader time or CPU limit: {timed_out or 'none'}"
    )
    for (kind, what), n in sorted(outcome.items()):
        print(f"  {kind}: {what} x{n}")
    loads, splits = _document_times(files)
    print(f"  slowest to load, through a loader pool (limit {IngestSettings().load_timeout_s:g} s):", loads)
    print("  slowest to split (this process):", splits)
    assert not problems, "\n".join(problems)
    assert peak_kib * 1024 < _PEAK_RSS_LIMIT, f"worker peak RSS {peak_kib / 1024:.0f} MiB"
    # The whole tree, as a container's memory limit counts it.
    assert tree.tree_rss_kib * 1024 < _PEAK_RSS_LIMIT, f"worker + loaders {tree.tree_rss_kib / 1024:.0f} MiB"
