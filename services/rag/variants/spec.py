"""A variant file: the named, versioned answer pipelines and their traffic weights.

The file is the source of truth: it is reviewed and versioned like code, every rag replica
reads the same one (a mounted ConfigMap in Kubernetes), and rag rereads it when it changes,
so weights move without a restart. A version's pipeline is fixed once it has taken traffic;
changing it means a new version (see ``services.rag.variants.registry``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.rag.config import RagSettings

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
# name or name@version, as a client pins one.
PIN_PATTERN = r"^[a-z][a-z0-9_-]{0,39}(@[1-9][0-9]{0,5})?$"
DEFAULT_NAME = "default"

# Variant field -> the rag setting it overrides (unset fields keep rag's setting).
_SETTING_OF = {
    "llm_url": "llm_url",
    "llm_model": "llm_model",
    "prompt_sentences": "prompt_sentences",
    "retrieval_mode": "retrieval_mode",
    "top_k": "default_top_k",
    "hybrid_fusion": "hybrid_fusion",
    "fusion_dense_weight": "fusion_dense_weight",
    "fusion_bm25_weight": "fusion_bm25_weight",
    "answer_mode": "answer_mode",
    "unsupported_sentences": "unsupported_sentences",
    "support_min_similarity": "support_min_similarity",
    "support_min_coverage": "support_min_coverage",
    "min_relevance": "min_relevance",
    "extract_min_relevance": "extract_min_relevance",
}


class VariantError(ValueError):
    """The variant file cannot be used; the message says why."""


class VariantSpec(BaseModel):
    """One version of an answer pipeline. Every pipeline field left out is rag's own setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1, le=999_999)
    weight: float = Field(0.0, ge=0, description="Share of traffic, relative to the other weights.")
    description: str = Field("", max_length=500)
    # The pipeline.
    llm_url: str | None = None
    llm_model: str | None = None
    system_prompt: str | None = Field(
        None, min_length=1, max_length=4000, description="The LLM's instruction (default: rag's)."
    )
    prompt_sentences: int | None = Field(None, ge=0, le=50)
    retrieval_mode: Literal["dense", "bm25", "hybrid"] | None = None
    top_k: int | None = Field(None, ge=1, le=50)
    hybrid_fusion: Literal["score", "rrf"] | None = None
    fusion_dense_weight: float | None = Field(None, ge=0)
    fusion_bm25_weight: float | None = Field(None, ge=0)
    rerank: bool = Field(False, description="Rerank the passages with rag's cross-encoder (rerank_model).")
    answer_mode: Literal["auto", "generate", "extractive"] | None = None
    unsupported_sentences: Literal["remove", "mark"] | None = None
    support_min_similarity: float | None = Field(None, ge=0, le=1)
    support_min_coverage: float | None = Field(None, ge=0, le=1)
    min_relevance: float | None = Field(None, ge=-1, le=1)
    extract_min_relevance: float | None = Field(None, ge=0)
    # What an answer costs, for the per-variant figures (any currency; 0: not counted).
    cost_per_1k_prompt_tokens: float = Field(0.0, ge=0)
    cost_per_1k_completion_tokens: float = Field(0.0, ge=0)

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def fingerprint(self) -> str:
        """A digest of the pipeline: what must not change once the version has taken traffic."""
        pipeline = self.model_dump(exclude={"weight", "description"})
        return hashlib.sha256(json.dumps(pipeline, sort_keys=True).encode()).hexdigest()[:32]

    def settings(self, base: RagSettings) -> RagSettings:
        """rag's settings with this pipeline's fields laid over them."""
        overrides = {
            setting: getattr(self, field)
            for field, setting in _SETTING_OF.items()
            if getattr(self, field) is not None
        }
        # Validated, not copied: each value is checked as the settings check it.
        try:
            return RagSettings.model_validate({**base.model_dump(), **overrides})
        except ValidationError as exc:
            raise VariantError(f"{self.id}: {exc}") from exc

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.cost_per_1k_prompt_tokens
            + completion_tokens * self.cost_per_1k_completion_tokens
        ) / 1000


class VariantFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    control: str | None = Field(
        None, pattern=NAME_PATTERN, description="The variant others are compared with (default: the first)."
    )
    variants: list[VariantSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> VariantFile:
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError("each name@version may appear once")
        if not any(v.weight > 0 for v in self.variants):
            raise ValueError("at least one variant needs a weight above 0")
        if self.control is not None and self.control not in {v.name for v in self.variants}:
            raise ValueError(f"control {self.control!r} is not a variant in the file")
        return self

    @property
    def control_name(self) -> str:
        return self.control or self.variants[0].name

    def current(self, name: str) -> VariantSpec | None:
        """A name's version taking traffic, else its highest (what a pin by name gets)."""
        versions = [v for v in self.variants if v.name == name]
        live = [v for v in versions if v.weight > 0]
        return max(live or versions, key=lambda v: v.version, default=None)


def default_file() -> VariantFile:
    """No file: one variant, rag's own settings, all the traffic."""
    return VariantFile(variants=[VariantSpec(name=DEFAULT_NAME, version=1, weight=1)])


def parse_file(text: str, max_variants: int) -> VariantFile:
    try:
        raw: Any = yaml.safe_load(text)
        parsed = VariantFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise VariantError(f"invalid variant file: {exc}") from exc
    if len(parsed.variants) > max_variants:
        # Variants label metrics: their number is what bounds the series.
        raise VariantError(f"{len(parsed.variants)} variants; at most {max_variants} (variants_max)")
    return parsed


def read_file(path: Path, max_variants: int) -> VariantFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VariantError(f"cannot read the variant file {path}: {exc}") from exc
    return parse_file(text, max_variants)


def write_weights(path: Path, weights: dict[str, float]) -> None:
    """Sets the weights of the named variants' highest versions, and 0 for every other
    version of those names; writes the file atomically (rag never reads half a file)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = raw["variants"]
    latest: dict[str, int] = {}
    for entry in entries:
        latest[entry["name"]] = max(latest.get(entry["name"], 0), int(entry["version"]))
    for entry in entries:
        if entry["name"] in weights:
            entry["weight"] = weights[entry["name"]] if int(entry["version"]) == latest[entry["name"]] else 0
    unknown = set(weights) - set(latest)
    if unknown:
        raise VariantError(f"no variant named {', '.join(sorted(unknown))}")
    text = yaml.safe_dump(raw, sort_keys=False)
    parse_file(text, max_variants=len(entries))  # never write a file rag would refuse
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(path)
