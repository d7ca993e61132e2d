"""Real text for comparing embedding formats: the sentences of examples/docs, and the QA set's
questions and reference answers (short questions and passages, as queries and ingest send)."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.sentences import is_heading, split_sentences

_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def sample_texts() -> list[str]:
    found = []
    for page in sorted((_EXAMPLES / "docs").glob("*.md")):
        found += [s for s in split_sentences(page.read_text()) if not is_heading(s)]
    for line in (_EXAMPLES / "qa" / "docs_qa.jsonl").read_text().splitlines():
        case = json.loads(line)
        found += [case["question"], *(r["text"] for r in case["reference"])]
    return found
