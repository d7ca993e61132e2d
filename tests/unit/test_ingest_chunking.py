"""Chunks are measured in the model's tokens, Markdown splits on headings, ids are stable."""

from __future__ import annotations

import itertools

from transformers import AutoTokenizer

from ingest.chunking import Chunker, chunk_id, default_tokenizer_path
from ingest.documents import Document
from ingest.store import DocState


def _doc(text: str, fmt: str = "txt", doc_id: str = "d1") -> Document:
    return Document(doc_id, "t", doc_id, text, {"format": fmt})


def test_token_counts_match_the_models_tokenizer_past_its_input_length() -> None:
    # The tokenizer file truncates and pads to 128 tokens for the model; counting must not.
    reference = AutoTokenizer.from_pretrained(default_tokenizer_path(), local_files_only=True)
    chunker = Chunker()
    texts = [
        "",
        "Vector search, re-ranked: naïve Bayes vs. BM25 (2024) — über-fast!",
        "word " * 700,
        "Σ-notation, émigré façades and 東京 in one line.\n\nAnd a second paragraph.",
    ]
    for text in texts:
        assert chunker.count_tokens(text) == len(reference.tokenize(text))
    assert chunker.count_tokens("word " * 700) == 700


def test_chunks_fit_the_token_budget_and_overlap() -> None:
    chunker = Chunker(chunk_tokens=40, overlap_tokens=8)
    text = " ".join(f"sentence number {i} talks about vector search." for i in range(60))
    chunks = chunker.split(_doc(text))
    assert len(chunks) > 5
    assert all(chunker.count_tokens(c.text) <= 40 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # Neighbouring chunks share words: the overlap.
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert set(first[-4:]) & set(second[:8])


def test_markdown_splits_on_headings_and_keeps_the_heading_path() -> None:
    text = "# Guide\nIntro text.\n## Install\nRun make install.\n### Offline\nNo network needed.\n# FAQ\nAsk."
    chunks = Chunker(chunk_tokens=200, overlap_tokens=0).split(_doc(text, fmt="md"))
    assert [c.headings for c in chunks] == [
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "Offline"),
        ("FAQ",),
    ]
    assert "Run make install." in chunks[1].text and "No network" not in chunks[1].text


def test_plain_text_is_not_split_on_hash_lines() -> None:
    chunks = Chunker(chunk_tokens=200, overlap_tokens=0).split(_doc("# not a heading\nbody", fmt="txt"))
    assert len(chunks) == 1 and chunks[0].headings == ()


def test_chunk_ids_depend_on_doc_and_content_only() -> None:
    chunker = Chunker(chunk_tokens=200, overlap_tokens=0)
    a = chunker.split(_doc("Same words here."))
    b = chunker.split(_doc("Same words here."))
    c = chunker.split(_doc("Same words here.", doc_id="d2"))
    assert a[0].chunk_id == b[0].chunk_id == chunk_id("d1", "Same words here.")
    assert a[0].chunk_id != c[0].chunk_id


def test_content_hash_changes_with_content_only() -> None:
    assert _doc("x").content_hash == _doc("x").content_hash
    assert _doc("x").content_hash != _doc("y").content_hash


def test_a_half_updated_document_is_not_current() -> None:
    # A run killed between upsert and stale removal leaves two hashes: index it again.
    assert DocState({"new"}, {"c1"}).current("new")
    assert not DocState({"old", "new"}, {"c1", "c2"}).current("new")
    assert not DocState({"old"}, {"c1"}).current("new")


def test_chunks_end_on_sentence_boundaries_and_overlap_by_whole_sentences() -> None:
    from services.common.sentences import split_sentences

    sentences = [
        f"Sentence {i} mentions llama.cpp, e.g. version 0.{i}, and the `qk_...` prefix." for i in range(40)
    ]
    text = " ".join(sentences)
    chunks = Chunker(chunk_tokens=90, overlap_tokens=35).split(_doc(text))  # ~27 tokens a sentence
    assert len(chunks) > 5
    for chunk in chunks:
        # Every sentence rag recovers from a chunk is a whole sentence of the document.
        assert set(split_sentences(chunk.text)) <= set(sentences), chunk.text
    for first, second in itertools.pairwise(chunks):
        assert split_sentences(first.text)[-1] in split_sentences(second.text)  # whole-sentence overlap


def test_a_heading_stays_a_sentence_of_its_own_in_a_chunk() -> None:
    from services.common.sentences import split_sentences

    text = "# The gateway\nThe gateway is the door. It listens on port 8100.\n## Keys\nKeys are hashed."
    chunks = Chunker(chunk_tokens=200, overlap_tokens=0).split(_doc(text, fmt="md"))
    assert [split_sentences(c.text) for c in chunks] == [
        ["# The gateway", "The gateway is the door.", "It listens on port 8100."],
        ["## Keys", "Keys are hashed."],
    ]
