"""Build Milvus filter expressions from values safely (Milvus Lite has no filter templates)."""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str) -> str:
    """A Milvus string literal for ``value``: backslashes and quotes escaped, nothing pasted raw."""
    if "\x00" in value:
        raise ValueError("NUL is not allowed in a filter value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_equals(field: str, value: str) -> str:
    return f"{field} == {quote(value)}"


def field_in(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{', '.join(quote(v) for v in values)}]"
