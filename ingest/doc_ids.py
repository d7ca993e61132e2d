"""What a document id may be, checked where ids arrive (API bodies, file names, records).

An id ends up in Milvus filters, Redis keys and JSON answers. Control characters (NUL,
newlines) break or bend filters, a lone surrogate cannot be encoded as UTF-8 at all, and
Milvus caps the stored field, so such ids are refused with a reason instead of failing
somewhere downstream, where the error would take a whole batch with it.
"""

from __future__ import annotations

import unicodedata

from services.common.vector_schema import MAX_DOC_ID_CHARS

# Names shown in errors are cut to this, so a hostile 1 MB name cannot bloat a job record.
_SHOWN_CHARS = 200


class InvalidDocId(ValueError):
    """The message says what is wrong, without echoing the raw id."""


def check_doc_id(value: object, max_chars: int = MAX_DOC_ID_CHARS) -> str:
    """``value`` as a document id, or :class:`InvalidDocId`.

    Integers are accepted as their decimal form, as BEIR corpora sometimes write them.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidDocId(f"id must be a string, not {_json_type(value)}")
    if not value.strip():
        raise InvalidDocId("id is empty")
    if len(value) > max_chars:
        raise InvalidDocId(f"id is {len(value):,} characters, over the cap of {max_chars:,}")
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc":
            raise InvalidDocId(f"id contains a control character (U+{ord(char):04X})")
        if category == "Cs":
            raise InvalidDocId(f"id contains a lone surrogate (U+{ord(char):04X})")
    # Milvus measures its VARCHAR cap in UTF-8 bytes, not characters.
    size = len(value.encode("utf-8"))
    if size > MAX_DOC_ID_CHARS:
        raise InvalidDocId(f"id is {size:,} bytes in UTF-8, over the store's cap of {MAX_DOC_ID_CHARS:,}")
    return value


def shown_name(name: str) -> str:
    """``name`` if it is a valid id, else a form safe to store and show: control characters
    and surrogates escaped, length cut.

    Used for the key of a per-document error, which must itself be writable to Redis.
    """
    try:
        return check_doc_id(name)
    except InvalidDocId:
        pass
    out: list[str] = []
    for char in name[:_SHOWN_CHARS]:
        if unicodedata.category(char) in ("Cc", "Cs"):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out) + ("…" if len(name) > _SHOWN_CHARS else "")


def _json_type(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)
