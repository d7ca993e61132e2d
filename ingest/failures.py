"""How a document's failure is told in a job's errors: one short line."""

from __future__ import annotations

_MAX_CHARS = 500

# The error code of a job that ran past QUARRY_INGEST_JOB_TIMEOUT_S, on a worker or locally.
JOB_TIMEOUT = "job_timeout"


def describe_error(exc: BaseException) -> str:
    """The exception's type and message, cut short (a parser's message can hold the input)."""
    return f"{type(exc).__name__}: {exc}"[:_MAX_CHARS]
