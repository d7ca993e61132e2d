"""Sticky traffic split: the same end user lands on the same variant while weights stand."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from services.rag.variants.spec import VariantSpec

_BUCKETS = 10_000


def bucket(identity: str) -> int:
    """A stable bucket in [0, 10,000) for an end user (a hash: same on every replica and restart)."""
    digest = hashlib.blake2b(identity.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _BUCKETS


def choose(variants: Sequence[VariantSpec], identity: str) -> VariantSpec:
    """The variant whose slice of the buckets holds ``identity``'s.

    Slices follow the file's order, so raising one variant's weight moves only the users
    of the buckets that change hands.
    """
    live = [v for v in variants if v.weight > 0]
    total = sum(v.weight for v in live)
    point = bucket(identity) / _BUCKETS * total
    edge = 0.0
    for variant in live:
        edge += variant.weight
        if point < edge:
            return variant
    return live[-1]  # float rounding at the top edge


def identity_of(user: str | None, key_id: str) -> str:
    """Who is kept on one variant: the request's end user, else the API key."""
    return f"user:{user}" if user else f"key:{key_id}"
