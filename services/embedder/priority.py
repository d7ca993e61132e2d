"""Who a text is for: a user waiting on a query, or bulk work such as an ingest."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    QUERY = "query"  # someone is waiting: runs first, in batches of its own
    BULK = "bulk"  # throughput work: runs when no query waits, in small passes


def default_priority(texts: int) -> Priority:
    """The priority of a request that does not say: one text reads as a query, a list as bulk."""
    return Priority.QUERY if texts == 1 else Priority.BULK
