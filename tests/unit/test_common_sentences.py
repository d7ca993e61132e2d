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


def test_hostile_text_never_breaks_the_segmenter_or_the_checks() -> None:
    """Random, truncated, huge and mis-encoded text: every function answers, nothing raises."""
    import random

    from services.rag.answer.key_terms import Vocabulary, content_coverage, key_terms, missing_terms
    from services.rag.answer.verification import claims

    rng = random.Random(7)
    alphabet = "aZ09 .,;:!?[]`#_-/\n\t\u00e9\u6771\u202e\ufffd\x00"
    alphabet += "".join(chr(c) for c in range(0x370, 0x380))
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400))) for _ in range(200)]
    samples += [
        "word " * 50_000,  # huge
        "[1]" * 5_000,
        "`" * 10_001,
        "e.g. " * 2_000,
        "# " * 3_000,
        b"caf\xe9 qk_\xff\xfe".decode("utf-8", errors="replace"),  # mis-encoded
        "The gateway listens on port 81",  # truncated mid-number
    ]
    vocabulary = Vocabulary.of(samples[:20])
    for text in samples:
        sentences = split_sentences(text)
        assert all(s == s.strip() and s for s in sentences)
        assert 0 <= closed_length(text) <= len(text)
        for claim in claims(text, 3):
            terms = key_terms(claim.text, vocabulary)
            assert missing_terms(terms, claim.text) <= terms
            assert 0.0 <= content_coverage(claim.text, text) <= 1.0
