"""Wire schemas of the rag service."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from services.common.vector_schema import COLLECTION_NAME_PATTERN
from services.rag.retrieval.filters import MAX_FIELDS, MAX_IN_VALUES, compile_filters
from services.rag.variants.spec import PIN_PATTERN

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
Number = StrictInt | StrictFloat


class FieldCondition(BaseModel):
    """Operators on one field, ANDed: ``{"eq": "en"}``, ``{"gte": 2020, "lt": 2024}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1, max_length=MAX_IN_VALUES)
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None

    def operators(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class SearchFilters(RootModel[dict[str, FieldCondition]]):
    """``{"doc_id": {"in": [...]}, "metadata.lang": {"eq": "en"}}``: every condition must hold.

    Fields: ``doc_id``, ``source``, ``title`` and ``metadata.<key>``; values are escaped,
    never pasted, and unsafe ones are refused with 422.
    """

    root: dict[str, FieldCondition] = Field(max_length=MAX_FIELDS)

    @model_validator(mode="after")
    def _compiles(self) -> SearchFilters:
        self.expression()  # FilterError is a ValueError: pydantic reports it as a 422
        return self

    def expression(self) -> str:
        return compile_filters({name: cond.operators() for name, cond in self.root.items()})


def filter_expression(filters: SearchFilters | None) -> str:
    return filters.expression() if filters is not None else ""


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    collection: str = Field(default="docs", pattern=COLLECTION_NAME_PATTERN)
    top_k: int | None = Field(default=None, ge=1, le=50)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    filters: SearchFilters | None = None
    stream: bool = False  # true: server-sent events (sources, token..., done)
    answer_mode: Literal["auto", "generate", "extractive"] | None = Field(
        default=None,
        description="auto: generate when the LLM is up, else extract; generate: the LLM, verified; "
        "extractive: source sentences verbatim, no LLM. Default: the service's setting.",
    )
    unsupported: Literal["remove", "mark"] | None = Field(
        default=None,
        description="Generated sentences no source supports: removed (then extract or abstain), or kept "
        "and marked supported=false. Default: the service's setting.",
    )
    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Your end user's stable id: keeps them on one answer variant (default: the API key).",
    )
    variant: str | None = Field(
        default=None,
        pattern=PIN_PATTERN,
        description="Pin an answer variant, `name` or `name@version` (admin keys only).",
    )


class Citation(BaseModel):
    n: int
    doc_id: str
    chunk_id: str
    title: str
    source: str
    score: float = Field(description="The ranking score (hybrid: fused, rescaled so the best hit is 1.0).")
    relevance: float | None = Field(
        default=None, description="Raw cosine similarity of question and passage (null: not dense-ranked)."
    )
    text: str


class AnswerSentence(BaseModel):
    text: str = Field(description="The sentence as shown in `answer`, without its markers.")
    citations: list[int] = Field(description="Numbers of the sources it cites (`n` of `citations`).")
    supported: bool = Field(description="A source sentence says it (meaning and every specific).")
    support_score: float = Field(description="Cosine to the closest source sentence it was checked against.")
    evidence: str | None = Field(default=None, description="That source sentence, verbatim.")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Safety(BaseModel):
    injection: list[str] = Field(default_factory=list, description="Injection patterns in the question.")
    redacted: list[str] = Field(default_factory=list, description="Kinds of PII masked in the answer.")
    supported_share: float = Field(1.0, description="Share of the shown sentences that a source supports.")
    grounded: bool = Field(True, description="Every sentence shown is supported by the source it cites.")
    removed_sentences: int = Field(
        0, description="Generated sentences removed because nothing supported them."
    )


class QueryResponse(BaseModel):
    answer_id: str = Field("", description="This answer's id, for `POST /v1/feedback`.")
    variant: str = Field("", description="The answer variant that answered, `name@version`.")
    answer: str
    citations: list[Citation]
    usage: Usage
    timings_ms: dict[str, float]
    cached: bool
    degraded: list[str]
    request_id: str
    answerable: bool = Field(True, description="false: the documents don't answer this; nothing was made up.")
    answered_by: Literal["llm", "extractive", "none"] = Field(
        "llm", description="What wrote the shown sentences: the LLM (verified), source quotes, or neither."
    )
    answer_sentences: list[AnswerSentence] = Field(default_factory=list)
    safety: Safety = Field(default_factory=Safety)


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    collection: str = Field(default="docs", pattern=COLLECTION_NAME_PATTERN)
    top_k: int = Field(default=10, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid"] | None = None  # None: the service's default
    filters: SearchFilters | None = None
    rerank: bool = True  # rerank when a reranker is configured


class SearchHit(BaseModel):
    rank: int
    chunk_id: str
    doc_id: str
    chunk_index: int
    title: str
    source: str
    text: str
    metadata: dict[str, Any]
    score: float = Field(description="The ranking score (hybrid: fused, rescaled so the best hit is 1.0).")
    relevance: float | None = Field(
        default=None, description="Raw cosine similarity of query and passage (null: not dense-ranked)."
    )
    bm25: float | None = Field(default=None, description="Raw BM25 score (null: not BM25-ranked).")


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    mode: str
    reranked: bool
    timings_ms: dict[str, float]
    request_id: str


class FeedbackRequest(BaseModel):
    answer_id: str = Field(pattern=r"^ans_[0-9a-f]{32}$")
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)
    sentence: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="The answer sentence it concerns (index in `answer_sentences`).",
    )


class FeedbackResponse(BaseModel):
    answer_id: str
    variant: str
    rating: str
    request_id: str


class VariantInfo(BaseModel):
    id: str
    name: str
    version: int
    weight: float
    share: float = Field(description="Share of traffic it takes now.")
    control: bool
    description: str


class VariantsResponse(BaseModel):
    variants: list[VariantInfo]
    source: str = Field(description="The variant file read, or `default` when none is set.")
