"""What loading in a limited child process adds per document, against loading in-process.

Loads a small text file and a one-page PDF ``--documents`` times each, in rounds that take turns
going first: once with ``load_bytes`` directly, once through a warm ``LoaderPool`` (one child, so
every document pays the round trip: pickling the bytes there and the documents back, and the
limits set per document).

Usage: python -m bench.loader_overhead [--documents 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

from fpdf import FPDF

from ingest.loaders import Loaded, load_bytes
from ingest.sandbox import LoaderPool, SandboxLimits

_TEXT = ("# Notes\n\n" + "Hybrid search joins dense and sparse scores. " * 40).encode()


def _pdf() -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 10, "Hybrid search joins dense and sparse scores. " * 40)
    return bytes(pdf.output())


Runner = Callable[[Callable[[], Loaded]], Loaded]


def _in_process(load: Callable[[], Loaded]) -> Loaded:
    return load()


def _per_document_ms(run: Runner, name: str, data: bytes, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        run(partial(load_bytes, name, data))
    return (time.perf_counter() - started) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    files = {"note.md": _TEXT, "page.pdf": _pdf()}
    with LoaderPool(SandboxLimits(processes=1)) as pool:
        for name, data in files.items():  # warm: the child starts and imports its parsers
            pool.run(partial(load_bytes, name, data))
        for name, data in files.items():
            direct: list[float] = []
            pooled: list[float] = []
            for r in range(args.rounds):
                order: list[tuple[list[float], Runner]] = [(direct, _in_process), (pooled, pool.run)]
                for series, run in order if r % 2 == 0 else order[::-1]:
                    series.append(_per_document_ms(run, name, data, args.documents))
            d, p = statistics.median(direct), statistics.median(pooled)
            print(
                f"{name} ({len(data):,} bytes): in-process {d:.2f} ms, pool {p:.2f} ms,"
                f" added {p - d:.2f} ms per document (median of {args.rounds} rounds x {args.documents})"
            )


if __name__ == "__main__":
    main()
