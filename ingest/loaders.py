"""Read files into Documents. One loader per format; a file that cannot be read fails alone.

Loaders work on bytes so the CLI (files on disk) and the HTTP API (uploads stored in
Redis) share them exactly.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ingest.doc_ids import InvalidDocId, check_doc_id
from ingest.documents import Document
from ingest.failures import describe_error
from services.common.logs import get_logger
from services.common.vector_schema import MAX_DOC_ID_CHARS

_log = get_logger(__name__)

DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_JSONL_RECORDS = 100_000
DEFAULT_MAX_PDF_PAGES = 500


class LoadError(Exception):
    """A file that cannot become documents; the message says why."""


@dataclass(frozen=True)
class LoadLimits:
    """Caps on what one file may become (the QUARRY_INGEST_MAX_* settings)."""

    file_bytes: int = DEFAULT_MAX_FILE_BYTES
    jsonl_records: int = DEFAULT_MAX_JSONL_RECORDS
    doc_id_chars: int = MAX_DOC_ID_CHARS
    pdf_pages: int = DEFAULT_MAX_PDF_PAGES


@dataclass
class Loaded:
    documents: list[Document] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Records of a many-document file that failed alone, by where they are ("a.jsonl line 3").
    failures: dict[str, str] = field(default_factory=dict)
    # Records past a cap were never read (so they are neither documents nor failures).
    partial: bool = False


def _decode(data: bytes, name: str, warnings: list[str]) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Keep the document: a few bad bytes should not lose the rest of the text.
        warnings.append(f"{name}: not valid UTF-8 (first bad byte at {exc.start}); decoded with replacement")
        _log.warning("non_utf8_input", name=name, offset=exc.start)
        return data.decode("utf-8", errors="replace")


def _title_of(text: str, fallback: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip() or fallback
        if stripped:
            return stripped[:200]
    return fallback


def _text_document(doc_id: str, text: str, fmt: str, stem: str) -> Document:
    if not text.strip():
        raise LoadError("no text in file")
    return Document(doc_id, _title_of(text, stem), doc_id, text, {"format": fmt})


def _load_text(doc_id: str, data: bytes, fmt: str, warnings: list[str]) -> list[Document]:
    return [_text_document(doc_id, _decode(data, doc_id, warnings), fmt, PurePosixPath(doc_id).stem)]


# Elements whose text is never the document's content.
_HTML_NOISE = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg")


def _load_html(doc_id: str, data: bytes, warnings: list[str]) -> list[Document]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data, doc_id, warnings), "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for tag in soup(list(_HTML_NOISE)):
        tag.decompose()
    # Prefer the page's own main content when it marks it.
    root = soup.find("main") or soup.find("article") or soup.body or soup
    text = "\n\n".join(line for line in (block.strip() for block in root.get_text("\n").split("\n")) if line)
    if not text:
        raise LoadError("no text in HTML")
    stem = PurePosixPath(doc_id).stem
    return [Document(doc_id, title or _title_of(text, stem), doc_id, text, {"format": "html"})]


def _load_pdf(doc_id: str, data: bytes, max_pages: int, warnings: list[str]) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise LoadError("PDF is encrypted")
        total = len(reader.pages)
        # Extraction time and text grow with pages; pages past the cap are never parsed.
        pages = [page.extract_text() or "" for page in reader.pages[:max_pages]]
        meta_title = reader.metadata.title if reader.metadata else None
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"corrupt PDF: {type(exc).__name__}: {exc}") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise LoadError("PDF has no extractable text (scanned image?)")
    if total > max_pages:
        warnings.append(
            f"{doc_id}: truncated: only the first {max_pages:,} of {total:,} pages were read"
            " (the cap per PDF)"
        )
    title = str(meta_title).strip() if meta_title else _title_of(text, PurePosixPath(doc_id).stem)
    return [Document(doc_id, title, doc_id, text, {"format": "pdf", "pages": len(pages)})]


def record_document(record: Any, source: str, max_id_chars: int = MAX_DOC_ID_CHARS) -> Document:
    """A BEIR-shaped record ``{_id|id, title, text, metadata}`` as a Document."""
    if not isinstance(record, dict):
        raise LoadError("record is not a JSON object")
    raw_id = record.get("_id", record.get("id"))
    if raw_id is None:
        raise LoadError("record has no _id or id")
    try:
        doc_id = check_doc_id(raw_id, max_id_chars)
    except InvalidDocId as exc:
        raise LoadError(str(exc)) from exc
    text, title, metadata = record.get("text"), record.get("title") or "", record.get("metadata") or {}
    if not isinstance(text, str) or not text.strip():
        raise LoadError(f"record {doc_id!r} has no text")
    if not isinstance(title, str) or not isinstance(metadata, dict):
        raise LoadError(f"record {doc_id!r}: title must be a string and metadata an object")
    return Document(doc_id, title or _title_of(text, doc_id), source, text, metadata)


def _load_jsonl(name: str, data: bytes, limits: LoadLimits, out: Loaded) -> list[Document]:
    docs: list[Document] = []
    records = 0
    for number, line in enumerate(_decode(data, name, out.warnings).splitlines(), start=1):
        if not line.strip():
            continue
        if records == limits.jsonl_records:
            out.warnings.append(
                f"{name}: only the first {records:,} records were read (the cap per JSONL file);"
                f" skipped from line {number} on"
            )
            out.partial = True
            break
        records += 1
        try:
            docs.append(record_document(json.loads(line), name, limits.doc_id_chars))
        except LoadError as exc:
            out.failures[f"{name} line {number}"] = str(exc)
        except Exception as exc:  # a record's own content (JSON nested too deep...) fails it alone
            out.failures[f"{name} line {number}"] = describe_error(exc)
    if not docs:
        first = next(iter(out.failures.items()), None)
        raise LoadError("no valid records in JSONL file" + (f" ({first[0]}: {first[1]})" if first else ""))
    return docs


_Loader = Callable[[str, bytes, LoadLimits, Loaded], list[Document]]

_LOADERS: dict[str, _Loader] = {
    ".txt": lambda d, b, _l, out: _load_text(d, b, "txt", out.warnings),
    ".md": lambda d, b, _l, out: _load_text(d, b, "md", out.warnings),
    ".markdown": lambda d, b, _l, out: _load_text(d, b, "md", out.warnings),
    ".html": lambda d, b, _l, out: _load_html(d, b, out.warnings),
    ".htm": lambda d, b, _l, out: _load_html(d, b, out.warnings),
    ".pdf": lambda d, b, lim, out: _load_pdf(d, b, lim.pdf_pages, out.warnings),
    ".jsonl": _load_jsonl,
}

SUPPORTED_SUFFIXES = frozenset(_LOADERS)


def load_bytes(name: str, data: bytes, limits: LoadLimits | None = None) -> Loaded:
    """Documents in one file called ``name`` (its doc id for single-document formats)."""
    limits = limits or LoadLimits()
    suffix = PurePosixPath(name).suffix.lower()
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise LoadError(
            f"unsupported file type {suffix or '(none)'}; supported: {', '.join(sorted(_LOADERS))}"
        )
    if len(data) > limits.file_bytes:
        raise LoadError(f"file is {len(data):,} bytes, over the cap of {limits.file_bytes:,} bytes")
    try:
        check_doc_id(name, limits.doc_id_chars)
    except InvalidDocId as exc:
        raise LoadError(f"file name: {exc}") from exc
    out = Loaded()
    out.documents = loader(name, data, limits, out)
    return out


def load_file(path: Path, root: Path | None = None, limits: LoadLimits | None = None) -> Loaded:
    limits = limits or LoadLimits()
    # The id is the path relative to what was ingested, so re-ingesting finds the same doc.
    rel = path.relative_to(root) if root and path.is_relative_to(root) else Path(path.name)
    size = path.stat().st_size
    if size > limits.file_bytes:  # checked before reading, so a huge file is never loaded
        raise LoadError(f"file is {size:,} bytes, over the cap of {limits.file_bytes:,} bytes")
    return load_bytes(rel.as_posix(), path.read_bytes(), limits)


def iter_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        if child.is_file() and not any(part.startswith(".") for part in child.relative_to(path).parts):
            yield child
