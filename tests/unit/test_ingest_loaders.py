"""Loaders turn each supported format into documents; bad files fail with a reason."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from fpdf import FPDF

from ingest.loaders import LoadError, LoadLimits, iter_files, load_bytes, load_file
from ingest.pipeline import Source, load_sources
from tests.pdf_files import pdf_of_pages


def _pdf(text: str, title: str = "") -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def test_markdown_title_and_doc_id() -> None:
    loaded = load_bytes("guides/setup.md", b"# Setting up\n\nInstall it.\n")
    [doc] = loaded.documents
    assert (doc.doc_id, doc.title, doc.source) == ("guides/setup.md", "Setting up", "guides/setup.md")
    assert doc.metadata == {"format": "md"}
    assert loaded.warnings == []


def test_non_utf8_text_is_decoded_with_replacement_and_a_warning() -> None:
    loaded = load_bytes("notes.txt", "caf\u00e9 ok".encode("latin-1"))
    assert loaded.documents[0].text == "caf\ufffd ok"
    assert len(loaded.warnings) == 1 and "not valid UTF-8" in loaded.warnings[0]


def test_html_keeps_main_text_not_markup_or_navigation() -> None:
    html = b"""<html><head><title>Quarry docs</title><style>p{color:red}</style></head>
    <body><nav>Home | About</nav><main><h1>Caching</h1><p>Answers are cached by generation.</p>
    <script>var secret = 1;</script></main><footer>(c) 2026</footer></body></html>"""
    [doc] = load_bytes("page.html", html).documents
    assert doc.title == "Quarry docs"
    assert "Answers are cached by generation." in doc.text and "Caching" in doc.text
    for noise in ("<p>", "color:red", "secret", "Home | About", "(c) 2026"):
        assert noise not in doc.text


def test_pdf_text_and_title() -> None:
    [doc] = load_bytes("paper.pdf", _pdf("Milvus stores dense vectors.", title="A paper")).documents
    assert "Milvus stores dense vectors." in doc.text
    assert doc.title == "A paper"
    assert doc.metadata["format"] == "pdf" and doc.metadata["pages"] == 1


def test_pdf_pages_past_the_cap_are_not_read_and_the_document_says_it_was_truncated() -> None:
    loaded = load_bytes("long.pdf", pdf_of_pages(7), LoadLimits(pdf_pages=5))
    [doc] = loaded.documents
    assert "Page 5 about" in doc.text and "Page 6" not in doc.text
    assert doc.metadata["pages"] == 5
    assert loaded.warnings == ["long.pdf: truncated: only the first 5 of 7 pages were read (the cap per PDF)"]
    assert load_bytes("short.pdf", pdf_of_pages(5), LoadLimits(pdf_pages=5)).warnings == []


def test_corrupt_pdf_fails_with_reason() -> None:
    with pytest.raises(LoadError, match=r"corrupt PDF|no extractable text"):
        load_bytes("broken.pdf", b"%PDF-1.7\n this is not a pdf at all")


def test_jsonl_records_in_beir_shape_and_bad_lines_fail_alone() -> None:
    lines = [
        json.dumps(
            {"_id": "4983", "title": "Microstructure", "text": "Alterations of the brain.", "metadata": {}}
        ),
        "{not json",
        json.dumps({"id": 7, "text": "Numeric ids become strings.", "metadata": {"year": 2001}}),
        json.dumps({"_id": "no-text"}),
    ]
    loaded = load_bytes("corpus.jsonl", "\n".join(lines).encode())
    assert [(d.doc_id, d.title) for d in loaded.documents] == [
        ("4983", "Microstructure"),
        ("7", "Numeric ids become strings."),
    ]
    assert loaded.documents[1].metadata == {"year": 2001}
    assert set(loaded.failures) == {"corpus.jsonl line 2", "corpus.jsonl line 4"}
    assert "JSONDecodeError" in loaded.failures["corpus.jsonl line 2"]
    assert "no text" in loaded.failures["corpus.jsonl line 4"]
    assert loaded.warnings == []


def test_a_line_nested_too_deep_fails_alone() -> None:
    deep = "[" * 200_000 + "]" * 200_000
    good = json.dumps({"_id": "ok", "text": "A good record."})
    loaded = load_bytes("deep.jsonl", f"{deep}\n{good}\n".encode())
    assert [d.doc_id for d in loaded.documents] == ["ok"]
    assert "RecursionError" in loaded.failures["deep.jsonl line 1"]


@pytest.mark.parametrize(
    ("doc_id", "reason"),
    [
        ("a\x00b", "control character (U+0000)"),
        ("a\nb", "control character (U+000A)"),
        ("\ud800x", "lone surrogate (U+D800)"),
        ("x" * 513, "over the cap of 512"),
        ("ü" * 300, "bytes in UTF-8"),
        (1.5, "must be a string, not a number"),
        ({"a": 1}, "must be a string, not an object"),
        ("  ", "id is empty"),
    ],
)
def test_bad_record_ids_fail_that_record_with_a_reason(doc_id: object, reason: str) -> None:
    line = json.dumps({"_id": doc_id, "text": "Some text."})
    good = json.dumps({"_id": "fine", "text": "Other text."})
    loaded = load_bytes("ids.jsonl", f"{line}\n{good}".encode())
    assert [d.doc_id for d in loaded.documents] == ["fine"]
    assert reason in loaded.failures["ids.jsonl line 1"]


def test_jsonl_records_past_the_cap_are_skipped_with_a_warning() -> None:
    lines = [json.dumps({"_id": f"r{i}", "text": f"Record {i}."}) for i in range(5)]
    loaded = load_bytes("many.jsonl", "\n\n".join(lines).encode(), LoadLimits(jsonl_records=3))
    assert [d.doc_id for d in loaded.documents] == ["r0", "r1", "r2"]
    [warning] = loaded.warnings
    assert "only the first 3 records" in warning and "line 7" in warning
    assert loaded.partial  # records past the cap were never read: a prune must keep them


def test_sources_that_did_not_load_cleanly_are_named_incomplete() -> None:
    records = "".join(json.dumps({"_id": f"r{i}", "text": f"Record {i}."}) + "\n" for i in range(4))
    files = {
        "clean.jsonl": records.encode(),
        "bad-line.jsonl": (records + "{not json\n").encode(),
        "truncated.jsonl": records.encode()[:20],
        "capped.jsonl": records.encode(),
        "a.txt": b"Plain text.",
    }
    limits = {"capped.jsonl": LoadLimits(jsonl_records=2)}
    sources = [Source(n, partial(load_bytes, n, data, limits.get(n))) for n, data in files.items()]
    loaded = load_sources(sources)
    assert loaded.incomplete == {"bad-line.jsonl", "truncated.jsonl", "capped.jsonl"}


def test_a_file_name_that_is_no_valid_id_fails_the_file() -> None:
    with pytest.raises(LoadError, match=r"file name: id contains a control character \(U\+000A\)"):
        load_bytes("bad\nname.txt", b"text")
    with pytest.raises(LoadError, match="over the cap of 8"):
        load_bytes("long-name.txt", b"text", LoadLimits(doc_id_chars=8))


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("image.png", b"\x89PNG", "unsupported file type .png"),
        ("README", b"text", "unsupported file type (none)"),
        ("empty.txt", b"  \n", "no text"),
        ("all-bad.jsonl", b"{]\n", "no valid records"),
    ],
)
def test_bad_files_fail_with_a_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(LoadError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        load_bytes(name, data)


def test_size_cap_gives_a_clear_error(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(LoadError, match="2,048 bytes, over the cap of 1,024 bytes"):
        load_file(big, tmp_path, LoadLimits(file_bytes=1024))
    with pytest.raises(LoadError, match="over the cap"):
        load_bytes("big.txt", b"x" * 2048, LoadLimits(file_bytes=1024))


def test_doc_ids_are_paths_relative_to_the_ingested_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.md").write_text("# One")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.md").write_text("# Hidden")
    files = list(iter_files(tmp_path))
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/one.md"]
    assert load_file(files[0], tmp_path).documents[0].doc_id == "a/one.md"
