"""What kind of answer a question asks for, when its wording says so.

"How many ...", "How much ...", "How long ..." and "Which port ..." are answered by a
number, "Which version ..." by a version, and "Which model ..." or "What GPU ..." by a
product's name, which holds letters and digits ("all-MiniLM-L6-v2", "H100"). A source
sentence without one does not answer such a question, however close its meaning: "How much
GPU memory does the LLM service need?" is not answered by "on a GPU it runs vLLM", nor
"What GPU model is required?" by "the LLM runs on GPU nodes". Other questions take any form.
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
# A product's name: one token joining letters and digits ("SmolLM2-135M-Instruct", "A100",
# "x86_64"); a plain word ("GPU") or a bare number is not one.
_NAME_RE: Final = re.compile(r"\b(?=[\w.\-]*[A-Za-z])(?=[\w.\-]*\d)[A-Za-z\d][\w.\-]*")
# "Which model ...", "What GPU model ...", "What CPU ...": not "which model's tokens ...",
# which asks about the model, not for its name.
_ASKS_NAME_RE: Final = re.compile(
    r"\b(?:which|what)\s+(?:\w+\s+)?(?:models?|[CG]PUs?|processors?|chips?)\b(?!['’])",
    re.IGNORECASE,
)


def expected_form(question: str) -> re.Pattern[str] | None:
    """The pattern an answer to ``question`` must hold, or None when any answer may do."""
    if _ASKS_VERSION_RE.search(question):
        return _VERSION_RE
    if _ASKS_NUMBER_RE.search(question):
        return _NUMBER_RE
    if _ASKS_NAME_RE.search(question):
        return _NAME_RE
    return None


def fits(form: re.Pattern[str] | None, text: str) -> bool:
    return form is None or form.search(text) is not None
