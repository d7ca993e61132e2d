"""Sentence boundaries: the hard cases of technical prose, Markdown headings, streamed text."""

from __future__ import annotations

import pytest

from services.common.sentences import closed_length, is_heading, normalise_space, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Every request carries a key in the `Authorization: Bearer qk_...` header. Keys are hashed.",
            ["Every request carries a key in the `Authorization: Bearer qk_...` header.", "Keys are hashed."],
        ),
        (
            "On a CPU it runs llama.cpp with SmolLM2-135M-Instruct. On a GPU it runs vLLM.",
            ["On a CPU it runs llama.cpp with SmolLM2-135M-Instruct.", "On a GPU it runs vLLM."],
        ),
        (
            "Some settings, e.g. a threshold of 0.5, are tuned on train. Others are not.",
            ["Some settings, e.g. a threshold of 0.5, are tuned on train.", "Others are not."],
        ),
        (
            "Keys look like qk_abc... and stay secret. Really?",
            ["Keys look like qk_abc... and stay secret.", "Really?"],
        ),
        (
            "It listens on port 8100 [1]. It forwards to rag [1][2].",
            ["It listens on port 8100 [1].", "It forwards to rag [1][2]."],
        ),
    ],
)
def test_technical_text_splits_only_at_real_boundaries(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_a_markdown_heading_is_a_sentence_of_its_own() -> None:
    text = "# The gateway  \nThe gateway is the door.\n\n## Keys\nKeys are\nhashed in Redis."
    sentences = split_sentences(text)
    assert sentences == ["# The gateway", "The gateway is the door.", "## Keys", "Keys are\nhashed in Redis."]
    assert [is_heading(s) for s in sentences] == [True, False, True, False]
    assert normalise_space(sentences[-1]) == "Keys are hashed in Redis."


@pytest.mark.parametrize(
    ("text", "closed"),
    [
        ("The gateway listens", ""),
        ("The gateway listens on 8100. It", "The gateway listens on 8100. "),
        ("It runs llama.cp", ""),
        ("It runs llama.cpp, e.g. on", ""),
        # The marker may belong to the sentence before: wait until it is whole.
        ("A sentence ends here. [", ""),
        ("A sentence ends here. [1] Another", "A sentence ends here. [1]"),
    ],
)
def test_a_growing_text_releases_only_finished_sentences(text: str, closed: str) -> None:
    assert text[: closed_length(text)] == closed
