"""What kind of answer a question asks for, when its wording says so.

"How many ...", "How much ...", "How long ..." and "Which port ..." are answered by a
number, and "Which version ..." by a version. A source sentence without one does not
answer such a question, however close its meaning: "How much GPU memory does the LLM
service need?" is not answered by "on a GPU it runs vLLM". Other questions take any form.
"""

from __future__ import annotations

import re
from typing import Final

# A number standing alone: "8100", "60", "0.5", "1,000"; not the digits inside a name
# ("SmolLM2-135M", "HTTP/2", "all-MiniLM-L6-v2").
_NUMBER_RE: Final = re.compile(r"(?<![\w.\-/])\d+(?:[.,]\d+)*(?![\w\-/])")
_VERSION_RE: Final = re.compile(r"\b(?:v\d+(?:\.\d+)*|\d+\.\d+(?:\.\d+)*)\b")
_ASKS_VERSION_RE: Final = re.compile(r"\b(?:which|what)\s+(?:\w+\s+)?versions?\b", re.IGNORECASE)
_ASKS_NUMBER_RE: Final = re.compile(
    r"\bhow\s+(?:many|much|long|big|large|old|often|fast)\b|\b(?:which|what)\s+(?:\w+\s+)?ports?\b",
    re.IGNORECASE,
)


def expected_form(question: str) -> re.Pattern[str] | None:
    """The pattern an answer to ``question`` must hold, or None when any answer may do."""
    if _ASKS_VERSION_RE.search(question):
        return _VERSION_RE
    if _ASKS_NUMBER_RE.search(question):
        return _NUMBER_RE
    return None


def fits(form: re.Pattern[str] | None, text: str) -> bool:
    return form is None or form.search(text) is not None
