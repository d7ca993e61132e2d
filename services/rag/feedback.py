"""Feedback on answers: a thumbs up or down, for the answer's own tenant only.

An answer's tenant is the API key that asked for it; feedback from any other key finds no
answer (404), exactly as an id that never existed, so ids reveal nothing across tenants.
"""

from __future__ import annotations

import time

from services.common.context import current_request_id
from services.common.errors import APIError
from services.rag import rag_metrics
from services.rag.answer_records import RecordStore, RecordsUnavailable
from services.rag.schemas import FeedbackRequest, FeedbackResponse


class FeedbackService:
    def __init__(self, records: RecordStore) -> None:
        self.records = records

    async def give(self, body: FeedbackRequest, key_id: str) -> FeedbackResponse:
        try:
            record = await self.records.find(body.answer_id)
        except RecordsUnavailable as exc:
            raise _unavailable() from exc
        if record is None or record.get("key_id") != key_id:
            raise APIError(404, "answer_not_found", f"no answer {body.answer_id!r}")
        if body.sentence is not None and body.sentence >= len(record.get("sentences", [])):
            raise APIError(422, "invalid_sentence", f"the answer has no sentence {body.sentence}")
        feedback = {
            "rating": body.rating,
            "comment": body.comment,
            "sentence": body.sentence,
            "at": time.time(),
            "variant": record["variant"],
        }
        try:
            await self.records.put_feedback(body.answer_id, feedback)
        except RecordsUnavailable as exc:
            raise _unavailable() from exc
        rag_metrics.for_variant(rag_metrics.VARIANT_FEEDBACK, record["variant"], body.rating).inc()
        return FeedbackResponse(
            answer_id=body.answer_id,
            variant=record["variant"],
            rating=body.rating,
            request_id=current_request_id(),
        )


def _unavailable() -> APIError:
    # Not acknowledged, so nothing is lost: the client retries.
    return APIError(
        503,
        "feedback_unavailable",
        "feedback cannot be stored now; retry shortly",
        headers={"retry-after": "2"},
    )
