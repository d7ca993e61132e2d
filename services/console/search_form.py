"""The Search page's filter fields as /v1/search ``filters`` (every condition must hold)."""

from __future__ import annotations

import json
import math
from typing import Any


class FormError(ValueError):
    """Fields that make no filter; shown beside the form, no search is sent."""


def metadata_value(text: str) -> Any:
    """A metadata value as typed: JSON numbers and true/false as such, anything else as text.

    Metadata keeps JSON types, so ``year=2020`` must match the number; ``"2020"`` (quoted) is
    the text.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, bool | str) or (isinstance(value, int | float) and math.isfinite(value)):
        return value
    return text  # null, lists, objects, NaN: not a scalar a filter compares


def search_filters(doc_id: str, source: str, meta_key: str, meta_value: str) -> dict[str, Any] | None:
    """The ``filters`` object for the filled fields; None when none is filled."""
    filters: dict[str, Any] = {}
    if doc_id.strip():
        filters["doc_id"] = {"eq": doc_id.strip()}
    if source.strip():
        filters["source"] = {"eq": source.strip()}
    key, value = meta_key.strip(), meta_value.strip()
    if bool(key) != bool(value):
        raise FormError("A metadata filter needs both a key and a value.")
    if key:
        # The key is checked by the API (422 names the rule), so the page never drifts from it.
        filters[f"metadata.{key}"] = {"eq": metadata_value(value)}
    return filters or None
