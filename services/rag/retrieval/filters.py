"""Structured metadata filters compiled to Milvus boolean expressions.

Callers send ``{"<field>": {"<op>": value}}``. Field names come from an allow-list
(``doc_id``, ``source``, ``title``, ``metadata.<key>``); values are only ever
rendered as escaped literals, never pasted, and values the Milvus parser cannot
hold as literals (control characters, lone surrogates) are refused.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

from services.common import vector_schema as vs
from services.common.milvus_expr import quote

STRING_FIELDS: Final = (vs.DOC_ID, vs.SOURCE, vs.TITLE)
METADATA_PREFIX: Final = "metadata."
METADATA_KEY_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
OPERATORS: Final = ("eq", "ne", "in", "gt", "gte", "lt", "lte")
MAX_FIELDS: Final = 16
MAX_IN_VALUES: Final = 100
MAX_STRING_CHARS: Final = 1024
# Integers past 2**53 do not survive JSON numbers in every client; refuse rather than round.
MAX_ABS_INT: Final = 2**53

_COMPARISONS: Final = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# Cc: control characters (NUL, newline: the parser rejects raw newlines in literals);
# Cs: lone surrogates, which cannot be encoded to send; Zl/Zp: line and paragraph separators.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


class FilterError(ValueError):
    """A filter the service will not run; surfaces as 422."""


def field_path(name: str) -> str:
    """The Milvus expression for an allowed field name."""
    if name in STRING_FIELDS:
        return name
    if name.startswith(METADATA_PREFIX):
        key = name[len(METADATA_PREFIX) :]
        if METADATA_KEY_PATTERN.fullmatch(key):
            return f'{vs.METADATA}["{key}"]'
        raise FilterError(f"metadata key {key!r} must match {METADATA_KEY_PATTERN.pattern}")
    allowed = ", ".join(STRING_FIELDS)
    raise FilterError(f"cannot filter on {name!r}; allowed: {allowed}, metadata.<key>")


def literal(value: Any) -> str:
    """A Milvus literal for a JSON scalar (string, integer, float, boolean)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > MAX_ABS_INT:
            raise FilterError(f"integer {value} is out of range (|n| <= 2**53)")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError("numbers must be finite")
        return repr(value)
    if isinstance(value, str):
        _check_string(value)
        return quote(value)
    raise FilterError(f"unsupported value type {type(value).__name__}")


def _check_string(value: str) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise FilterError(f"string values are limited to {MAX_STRING_CHARS} characters")
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise FilterError(f"string values must not contain control characters (U+{ord(char):04X})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _condition(name: str, op: str, value: Any) -> str:
    path = field_path(name)
    is_metadata = name.startswith(METADATA_PREFIX)
    if op in _COMPARISONS:
        if not is_metadata or not _is_number(value):
            raise FilterError(f"{name}: {op} compares numbers in metadata only")
        return f"{path} {_COMPARISONS[op]} {literal(value)}"
    values = value if op == "in" else [value]
    if op == "in" and (not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES):
        raise FilterError(f"{name}: in takes a list of 1 to {MAX_IN_VALUES} values")
    if not is_metadata and not all(isinstance(v, str) for v in values):
        raise FilterError(f"{name} is a string field; compare it with strings")
    if op == "eq":
        return f"{path} == {literal(value)}"
    if op == "ne":
        return f"{path} != {literal(value)}"
    if op == "in":
        if is_metadata:
            # Milvus Lite cannot apply ``in`` to JSON paths; equality alternatives mean the same.
            return "(" + " or ".join(f"{path} == {literal(v)}" for v in values) + ")"
        return f"{path} in [{', '.join(literal(v) for v in values)}]"
    raise FilterError(f"{name}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")


def compile_filters(filters: Mapping[str, Mapping[str, Any]] | None) -> str:
    """One Milvus expression ANDing every condition; ``""`` when there are none."""
    if not filters:
        return ""
    if len(filters) > MAX_FIELDS:
        raise FilterError(f"at most {MAX_FIELDS} fields per filter")
    parts: list[str] = []
    for name, ops in filters.items():
        if not ops:
            raise FilterError(f"{name}: give at least one operator")
        parts.extend(f"({_condition(name, op, value)})" for op, value in ops.items())
    return " and ".join(parts)
