"""The specifics a supported sentence must share with its source: numbers, identifiers, code,
names, polarity and units."""

from __future__ import annotations

from services.rag.answer.key_terms import (
    Vocabulary,
    content_coverage,
    key_terms,
    longest_new_run,
    missing_terms,
)

SOURCES = [
    "The gateway is the only public door into Quarry.",
    "It listens on port 8100 by default and forwards questions to the rag service over HTTP/2.",
    "On a CPU it runs llama.cpp with the SmolLM2-135M-Instruct model; on a GPU it runs vLLM.",
    "Keys are stored in Redis only as salted hashes.",
    "Each key has its own rate limit, such as 60 requests per minute.",
    "Every request carries a key in the `Authorization: Bearer qk_...` header.",
]
VOCABULARY = Vocabulary.of(SOURCES)


def test_numbers_identifiers_code_and_names_are_key_terms() -> None:
    terms = key_terms(
        "It runs llama.cpp and SmolLM2-135M-Instruct on port 8102 under `qk_...` in Redis.", VOCABULARY
    )
    assert {"llama.cpp", "smollm2-135m-instruct", "8102", "qk_...", "redis"} <= terms
    assert "runs" not in terms and "port" not in terms


def test_a_capitalised_first_word_is_a_name_only_when_the_sources_say_so() -> None:
    assert key_terms("Keys are salted.", VOCABULARY) == set()  # an ordinary word starting a sentence
    assert "redis" in key_terms("Redis stores the keys.", VOCABULARY)  # a name the sources capitalise
    assert "kafka" in key_terms("Kafka stores the keys.", VOCABULARY)  # a word the sources never use
    assert key_terms("Yes, per-key limits exist.", VOCABULARY) == set()


def test_polarity_and_units_must_match() -> None:
    assert "never" in key_terms("Keys are never stored.", VOCABULARY)
    assert "not" in key_terms("Keys aren't stored.", VOCABULARY)
    assert "second" in key_terms("Each key gets 60 requests per second.", VOCABULARY)
    assert missing_terms({"60", "second"}, SOURCES[4]) == {"second"}
    assert missing_terms({"60", "minutes"}, SOURCES[4]) == set()  # stems meet


def test_missing_terms_finds_a_wrong_port_and_a_wrong_name() -> None:
    evidence = f"{SOURCES[0]} {SOURCES[1]}"
    assert missing_terms(key_terms("The gateway listens on port 8102.", VOCABULARY), evidence) == {"8102"}
    wrong_hop = key_terms("The gateway forwards questions to the LLM service.", VOCABULARY)
    assert missing_terms(wrong_hop, evidence) == {"llm"}
    assert missing_terms(key_terms("The gateway speaks `HTTP/2`.", VOCABULARY), evidence) == set()
    code = key_terms("Each request carries `Authorization: Bearer qk_...`.", VOCABULARY)
    assert missing_terms(code, SOURCES[5]) == set()
    assert missing_terms(code, SOURCES[3]) == code


def test_content_coverage_counts_stems() -> None:
    assert content_coverage("Keys are stored as salted hashes.", SOURCES[3]) == 1.0
    assert content_coverage("Keys are stored as plain text.", SOURCES[3]) == 0.5
    assert content_coverage("It is.", "anything") == 1.0


def test_longest_new_run_counts_content_words_in_a_row_the_evidence_never_uses() -> None:
    assert longest_new_run("Keys are kept in Redis as salted hashes.", SOURCES[3]) == 1  # "kept"
    assert longest_new_run("Each key has a limit of 60 requests a minute.", SOURCES[4]) == 0
    invented = "Each key has its own rate limit to prevent data from being sent too frequently."
    assert longest_new_run(invented, SOURCES[4]) == 4  # prevent data sent frequently
    # New words apart are paraphrase, not a clause: the run starts again at a shared word.
    assert longest_new_run("Every call brings a key in the `Authorization` header.", SOURCES[5]) == 2


def test_words_inside_a_path_or_identifier_count_as_used() -> None:
    source = "It serves an OpenAI-compatible `/v1/chat/completions` endpoint on port 8102."
    assert longest_new_run("It serves its chat completions endpoint on port 8102.", source) == 0
    invented = "It serves an OpenAI-compatible model, which can be trained on any type of data."
    assert longest_new_run(invented, source) == 4  # model trained type data
