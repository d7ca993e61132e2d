"""A corpus of hostile files for the loader fuzz, mixed with good ones, made from a seed.

``python -m tests.fuzz.hostile_files OUT_DIR --files 240`` writes the corpus (and a
``manifest.json`` of what each file is and what must become of it) for a look by hand;
``tests/fuzz/test_loader_fuzz.py`` makes it in memory and sends it through the real worker.

Each hostile file says what the job must do with it:

* ``error``: named in the job's ``errors`` (it cannot become a document);
* ``indexed``: stored under exactly its name (odd but legal, e.g. a name with path parts, or
  text with bad bytes decoded with replacement);
* ``either``: one or the other (a parser may or may not cope), never the job's failure.
"""

from __future__ import annotations

import argparse
import json
import random
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Expect = Literal["error", "indexed", "either", "good"]


@dataclass(frozen=True)
class CorpusFile:
    name: str
    kind: str
    expect: Expect
    data: bytes
    # A word only this file holds, for good files: a search for it must find the file.
    marker: str = ""
    # The document it makes when it loads, where that is not its name (a JSONL record's id).
    record_id: str = ""

    @property
    def uploaded_as(self) -> str:
        """The name the ingest API gets for this upload: it drops leading slashes, and the
        multipart parser keeps only the last part of a Windows path (``C:\\a\\b.txt``)."""
        name = self.name
        if name[1:3] == ":\\" or name.startswith("\\\\"):
            name = name.split("\\")[-1]
        return name.strip().lstrip("/")

    @property
    def doc_id(self) -> str:
        return self.record_id or self.uploaded_as


def pdf(pages: list[bytes], *, title: str = "", deflate: bool = False) -> bytes:
    """A small, valid PDF whose pages draw the given content streams (Helvetica as /F1)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    info = f" /Info {4 + 2 * n_pages} 0 R" if title else ""
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, content in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            f" /Contents {5 + 2 * i} 0 R >>".encode()
        )
        body = zlib.compress(content, 9) if deflate else content
        flt = b" /Filter /FlateDecode" if deflate else b""
        objects.append(b"<< /Length %d%s >>\nstream\n" % (len(body), flt) + body + b"\nendstream")
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (len(objects) + 1, info.encode())
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def text_page(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1")


_WORDS = [
    "granite",
    "basalt",
    "quartz",
    "feldspar",
    "magma",
    "sediment",
    "mineral",
    "crystal",
    "erosion",
    "strata",
]


def _sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def _good(rng: random.Random, i: int) -> CorpusFile:
    marker = f"zq{i:04d}{rng.randrange(16**6):06x}"
    body = f"The sample called {marker} is described here. {_sentence(rng)} {_sentence(rng)}"
    fmt = i % 5
    if fmt == 0:
        return CorpusFile(f"good/{i:04d}.md", "good md", "good", f"# Good {i}\n\n{body}\n".encode(), marker)
    if fmt == 1:
        return CorpusFile(f"good/{i:04d}.txt", "good txt", "good", body.encode(), marker)
    if fmt == 2:
        html = f"<html><head><title>Good {i}</title></head><body><main><p>{body}</p></main></body></html>"
        return CorpusFile(f"good/{i:04d}.html", "good html", "good", html.encode(), marker)
    if fmt == 3:
        return CorpusFile(
            f"good/{i:04d}.pdf", "good pdf", "good", pdf([text_page(body)], title=f"Good {i}"), marker
        )
    record = {"_id": f"good/{i:04d}.rec", "title": f"Good {i}", "text": body}
    data = (json.dumps(record) + "\n").encode()
    return CorpusFile(f"good/{i:04d}.jsonl", "good jsonl", "good", data, marker, record["_id"])


# Hostile kinds: (kind, maker). A maker gets the rng, the file's index and the corpus' scale
# (1.0 full size; smaller in `make test` keeps the huge kinds affordable).
Maker = Callable[[random.Random, int, float], CorpusFile]


def _truncated_pdf(rng: random.Random, i: int, scale: float) -> CorpusFile:
    whole = pdf([text_page(_sentence(rng)) for _ in range(3)], deflate=bool(i % 2))
    cut = rng.randrange(1, len(whole) - 40)  # the trailer and xref are always gone
    return CorpusFile(f"hostile/truncated-{i}.pdf", "truncated PDF", "either", whole[:cut])


def _random_pdf(rng: random.Random, i: int, scale: float) -> CorpusFile:
    head = b"%PDF-1.7\n" if i % 3 else b""
    return CorpusFile(
        f"hostile/random-{i}.pdf", "random-byte PDF", "error", head + rng.randbytes(rng.randrange(1, 65_536))
    )


def _pdf_bomb(rng: random.Random, i: int, scale: float) -> CorpusFile:
    """A deflated content stream far larger inflated than the file (over pypdf's 75 MB limit, or
    just under it), or many pages sharing the inflated weight."""
    variant = i % 3
    if variant == 0:  # one stream inflating to ~200 MB of spaces
        return CorpusFile(
            f"hostile/bomb-{i}.pdf",
            "PDF compression bomb",
            "either",
            pdf([b" " * int(200e6 * scale)], deflate=True),
        )
    if variant == 1:  # just under the per-stream limit, with a little text at the end
        page = b" " * int(70e6 * scale) + text_page(_sentence(rng))
        return CorpusFile(
            f"hostile/bomb-{i}.pdf", "PDF compression bomb", "either", pdf([page], deflate=True)
        )
    pages = [b" " * int(5e6 * scale) + text_page(_sentence(rng)) for _ in range(8)]
    return CorpusFile(f"hostile/bomb-{i}.pdf", "PDF compression bomb", "either", pdf(pages, deflate=True))


def _deep_json(rng: random.Random, i: int, scale: float) -> CorpusFile:
    depth = 200_000
    variant = i % 3
    if variant == 0:
        line = "[" * depth + "]" * depth
    elif variant == 1:
        line = '{"a":' * depth + "1" + "}" * depth
    else:  # a record whose metadata nests past the parser's recursion limit
        nested = '{"m":' * depth + "1" + "}" * depth
        line = f'{{"_id": "deep-{i}", "text": "t", "metadata": {nested}}}'
    return CorpusFile(f"hostile/deep-{i}.jsonl", "deep JSON", "error", line.encode())


def _huge_line(rng: random.Random, i: int, scale: float) -> CorpusFile:
    size = int(rng.randrange(1_000_000, 3_000_000) * scale)
    variant = i % 3
    if variant == 0:  # one "word", no space, no sentence end
        return CorpusFile(f"hostile/huge-word-{i}.txt", "huge line", "either", b"x" * size)
    if variant == 1:  # a JSONL record on one line whose text is one huge word
        record = json.dumps({"_id": f"huge-{i}", "text": "y" * size})
        return CorpusFile(
            f"hostile/huge-{i}.jsonl", "huge line", "either", record.encode(), record_id=f"huge-{i}"
        )
    # words without end: past the chunks-per-document cap at full size
    return CorpusFile(f"hostile/huge-words-{i}.md", "huge line", "either", b"rock " * (size // 5 * 3))


def _bad_utf8(rng: random.Random, i: int, scale: float) -> CorpusFile:
    text = bytearray(f"Bad bytes sample {i}. {_sentence(rng)} ".encode())
    for _ in range(rng.randrange(1, 20)):
        pos = rng.randrange(len(text))
        text[pos:pos] = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    return CorpusFile(f"hostile/bad-utf8-{i}.txt", "invalid UTF-8", "indexed", bytes(text))


def _utf16(rng: random.Random, i: int, scale: float) -> CorpusFile:
    text = f"UTF-16 sample {i}. {_sentence(rng)}"
    variant = i % 3
    if variant == 0:  # BOM + UTF-16: decoded as UTF-8 with replacement; NULs between letters
        data = "\ufeff".encode("utf-16-le") + text.encode("utf-16-le")
    elif variant == 1:  # big endian, no BOM
        data = text.encode("utf-16-be")
    else:  # a lone surrogate in UTF-16 and an odd byte count
        data = text.encode("utf-16-le") + b"\x00\xd8" + b"\x41"
    return CorpusFile(f"hostile/utf16-{i}.md", "invalid UTF-16", "either", data)


def _giant_script(rng: random.Random, i: int, scale: float) -> CorpusFile:
    script = b"<script>" + b"var a=1;" * int(rng.randrange(100_000, 500_000) * scale) + b"</script>"
    if i % 2:  # nothing but the script: no text
        return CorpusFile(
            f"hostile/script-only-{i}.html",
            "HTML with a giant script",
            "error",
            b"<html><body>" + script + b"</body></html>",
        )
    page = (
        b"<html><head>"
        + script
        + b"</head><body><p>Script sample %d. " % i
        + _sentence(rng).encode()
        + b"</p></body></html>"
    )
    return CorpusFile(f"hostile/script-{i}.html", "HTML with a giant script", "indexed", page)


def _empty(rng: random.Random, i: int, scale: float) -> CorpusFile:
    suffix = (".txt", ".md", ".html", ".pdf", ".jsonl")[i % 5]
    data = (b"", b"   \n\t\n", b"<html></html>", b"", b"\n\n")[i % 5]
    return CorpusFile(f"hostile/empty-{i}{suffix}", "empty file", "error", data)


def _path_name(rng: random.Random, i: int, scale: float) -> CorpusFile:
    names = [
        f"../../../../etc/passwd-{i}.txt",
        f"/abs/root-{i}.md",
        f"a/./b/../c-{i}.txt",
        f"C:\\Windows\\system32\\x-{i}.txt",  # stored as x-{i}.txt: see uploaded_as
        f"~/.ssh/id-{i}.md",
        f"dir//double-{i}.txt",
    ]
    name = names[i % len(names)]
    return CorpusFile(name, "name with path parts", "indexed", f"Path sample {i}. {_sentence(rng)}".encode())


def _bad_name(rng: random.Random, i: int, scale: float) -> CorpusFile:
    """Names no document may have. A NUL or newline goes in a record's id: in a multipart file
    name the client percent-encodes it (as browsers do), so the server never sees it raw."""
    variant = i % 5
    if variant < 2:
        bad = f"nul\x00{i}" if variant == 0 else f"new\nline-{i}"
        data = json.dumps({"_id": bad, "text": f"Named sample {i}."}).encode()
        return CorpusFile(f"hostile/bad-id-{i}.jsonl", "bad name or type", "error", data)
    name = (f"{'n' * 600}-{i}.txt", f"no-suffix-{i}", f"prog-{i}.exe")[variant - 2]
    return CorpusFile(name, "bad name or type", "error", f"Named sample {i}.".encode())


HOSTILE_KINDS: tuple[Maker, ...] = (
    _truncated_pdf,
    _random_pdf,
    _pdf_bomb,
    _deep_json,
    _huge_line,
    _bad_utf8,
    _utf16,
    _giant_script,
    _empty,
    _path_name,
    _bad_name,
)


def corpus(hostile: int, good: int, *, seed: int = 20_240_601, scale: float = 1.0) -> list[CorpusFile]:
    """``hostile`` files round-robin over every kind, and ``good`` ones, shuffled together."""
    rng = random.Random(seed)
    files = [HOSTILE_KINDS[i % len(HOSTILE_KINDS)](rng, i, scale) for i in range(hostile)]
    files += [_good(rng, i) for i in range(good)]
    rng.shuffle(files)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--files", type=int, default=240, help="hostile files")
    parser.add_argument("--good", type=int, default=40)
    parser.add_argument("--seed", type=int, default=20_240_601)
    args = parser.parse_args()
    manifest = []
    for n, f in enumerate(corpus(args.files, args.good, seed=args.seed)):
        # On disk each file gets a plain name: the hostile name is the point, kept in the manifest.
        path = args.out / f"{n:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
        manifest.append({**{k: v for k, v in asdict(f).items() if k != "data"}, "path": path.name})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=True))


if __name__ == "__main__":
    main()
