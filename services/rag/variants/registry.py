"""The variants rag serves: loaded from the file, reread when it changes, chosen per query.

A version's pipeline is fixed once it has taken traffic: its fingerprint is noted in Redis
the first time it is loaded with a weight, and a file that changes a noted version is
refused as a whole (rag keeps serving the variants it had, and says why in its log and in
``quarry_rag_variant_reloads_total{result="rejected"}``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import APIError
from services.common.logs import get_logger
from services.rag import rag_metrics
from services.rag.serving import QueryService
from services.rag.variants.assignment import choose, identity_of
from services.rag.variants.spec import VariantError, VariantFile, VariantSpec, default_file, read_file

_log = get_logger(__name__)


def fingerprint_key(variant_id: str) -> str:
    return f"quarry:variant:{variant_id}:pipeline"


@dataclass(frozen=True)
class _Table:
    file: VariantFile
    services: dict[str, QueryService]  # by name@version


class VariantRegistry:
    def __init__(
        self,
        path: Path | None,
        build: Callable[[VariantSpec], QueryService],
        redis: Any,
        max_variants: int,
        reload_s: float,
    ) -> None:
        self.path = path
        self._build = build
        self._redis = redis
        self._max = max_variants
        self._reload_s = reload_s
        self._stamp: tuple[int, int] | None = None
        self._fingerprints: dict[str, str] = {}  # versions that took traffic in this process
        self._table = _Table(default_file(), {})

    @property
    def file(self) -> VariantFile:
        return self._table.file

    async def load(self) -> None:
        """The first read: an unusable file stops rag from starting (it says why)."""
        if self.path is None:
            await self._apply(default_file())
            return
        self._stamp = self._stat()
        await self._apply(read_file(self.path, self._max))

    async def watch(self) -> None:
        """Rereads the file whenever it changes, until cancelled."""
        while True:
            await asyncio.sleep(self._reload_s)
            if self.path is None:
                continue
            stamp = self._stat()
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                await self._apply(read_file(self.path, self._max))
            except VariantError as exc:
                rag_metrics.VARIANT_RELOADS.labels("rejected").inc()
                _log.error("variants_rejected", path=str(self.path), error=str(exc))
            else:
                rag_metrics.VARIANT_RELOADS.labels("applied").inc()
                _log.info("variants_applied", variants={v.id: v.weight for v in self.file.variants})

    def route(self, user: str | None, key_id: str, pin: str | None) -> QueryService:
        table = self._table
        if pin is None:
            return table.services[choose(table.file.variants, identity_of(user, key_id)).id]
        name, _, version = pin.partition("@")
        spec = (
            table.file.current(name)
            if not version
            else next((v for v in table.file.variants if v.id == pin), None)
        )
        if spec is None:
            raise APIError(422, "unknown_variant", f"no variant {pin!r}; see GET /v1/variants")
        return table.services[spec.id]

    def shares(self) -> dict[str, float]:
        live = [v for v in self.file.variants if v.weight > 0]
        total = sum(v.weight for v in live)
        return {v.id: (v.weight / total if v.weight > 0 else 0.0) for v in self.file.variants}

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def _apply(self, file: VariantFile) -> None:
        await self._check_fixed(file)
        old = self._table.services
        services: dict[str, QueryService] = {}
        for spec in file.variants:
            kept = old.get(spec.id)
            if kept is not None and kept.variant.fingerprint() == spec.fingerprint():
                kept.variant = spec  # only the weight or description moved
                services[spec.id] = kept
            else:
                services[spec.id] = self._build(spec)
        self._table = _Table(file, services)
        for gone in set(old) - set(services):
            rag_metrics.forget_variant(gone)

    async def _check_fixed(self, file: VariantFile) -> None:
        """Refuses a file that changes the pipeline of a version that has taken traffic."""
        prints = {v.id: v.fingerprint() for v in file.variants}
        noted = dict(self._fingerprints)
        try:
            stored = await self._redis.mget([fingerprint_key(i) for i in prints])
            noted.update({i: raw.decode() for i, raw in zip(prints, stored, strict=True) if raw is not None})
        except Exception as exc:  # Redis down: this process's own memory still holds
            _log.warning("variant_fingerprints_unchecked", error=str(exc))
        changed = sorted(i for i, fp in prints.items() if noted.get(i, fp) != fp)
        if changed:
            raise VariantError(
                f"{', '.join(changed)} changed after taking traffic; give the change a new version"
            )
        live = {v.id: prints[v.id] for v in file.variants if v.weight > 0}
        self._fingerprints.update(live)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for variant_id, fp in live.items():
                    pipe.set(fingerprint_key(variant_id), fp, nx=True)
                await pipe.execute()
        except Exception as exc:
            _log.warning("variant_fingerprints_unsaved", error=str(exc))
