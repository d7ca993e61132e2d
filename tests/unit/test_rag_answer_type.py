"""Questions that ask for a number or a version, and sentences that hold one."""

from __future__ import annotations

import pytest

from services.rag.answer.answer_type import expected_form, fits


@pytest.mark.parametrize(
    ("question", "answer", "fit"),
    [
        ("What port does the gateway listen on?", "It listens on port 8100 by default.", True),
        ("Which ports do the embedder and Milvus use?", "The embedder serves on port 8101.", True),
        ("How many dimensions do the vectors have?", "Vectors have 384 dimensions.", True),
        ("How much GPU memory does the LLM need?", "On a GPU it runs vLLM.", False),
        # Digits inside a name are not a quantity.
        ("How much memory does the model need?", "It runs SmolLM2-135M-Instruct over HTTP/2.", False),
        ("How long are answers cached?", "Answers are cached for 0.5 hours.", True),
        ("Which version of Milvus is required?", "Milvus Lite listens on port 19539.", False),
        ("Which version of Milvus is required?", "Quarry needs Milvus 2.4 or later.", True),
        ("What version of the API is this?", "This is the v1 API.", True),
        # A model or a chip is asked for by name.
        ("What GPU model is required?", "The LLM is scaled on GPU nodes.", False),
        ("What GPU model is required?", "It needs an H100.", True),
        ("Which model does the embedder use?", "It runs all-MiniLM-L6-v2.", True),
        ("Which model does the embedder use?", "It runs a small sentence model.", False),
        ("What CPU is required to run the LLM?", "A CPU with AVX2 runs llama.cpp.", True),
        ("What CPU is required to run the LLM?", "On a CPU it runs llama.cpp.", False),
    ],
)
def test_a_question_asking_for_a_number_needs_one(question: str, answer: str, fit: bool) -> None:
    assert fits(expected_form(question), answer) is fit


@pytest.mark.parametrize(
    "question",
    [
        "What does the gateway do?",
        "How are keys stored?",
        "Which model's tokens measure a chunk?",
        "What file format is the CPU model stored in?",
    ],
)
def test_other_questions_take_any_answer(question: str) -> None:
    assert expected_form(question) is None
    assert fits(expected_form(question), "Keys are stored as salted hashes.")
