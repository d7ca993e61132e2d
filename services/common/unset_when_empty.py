"""Optional settings an environment variable may set to ``""`` to mean unset.

pydantic-settings hands an empty variable to the field as ``""``, which an ``int | None`` or
``Path | None`` field refuses (or, for a path, reads as ``.``). Deployments write
``QUARRY_<SVC>_METRICS_PORT=`` to turn a setting off as often as they leave it out, so both
must mean the same: annotate the field ``Annotated[int | None, UNSET_WHEN_EMPTY]``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator


def empty_is_unset(value: Any) -> Any:
    """``None`` for an empty (or blank) string, else the value as given."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


UNSET_WHEN_EMPTY = BeforeValidator(empty_is_unset)
