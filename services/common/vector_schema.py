"""The Milvus collection layout that ingest writes and rag reads.

Chunk ids are the primary key, so re-indexing the same chunk overwrites it.
``sparse`` is filled by Milvus itself from ``lexical`` (its BM25 function), which gives
full-text search without a second store; ``lexical`` holds the chunk's title and text as
:mod:`services.common.lexical` normalises them. Collections made before ``lexical`` existed
run BM25 over ``text``: :func:`bm25_input` tells which.
"""

from __future__ import annotations

from typing import Any, Final

from services.common.lexical import lexical_text

CHUNK_ID: Final = "chunk_id"
DOC_ID: Final = "doc_id"
DOC_HASH: Final = "doc_hash"
CHUNK_INDEX: Final = "chunk_index"
TEXT: Final = "text"
TITLE: Final = "title"
SOURCE: Final = "source"
METADATA: Final = "metadata"
DENSE: Final = "dense"
SPARSE: Final = "sparse"
LEXICAL: Final = "lexical"

# A collection property: the SQLite file that keeps the collection's BM25 terms beside Milvus
# (services.common.lexical_index), for every process that writes or searches it.
LEXICAL_INDEX_PROPERTY: Final = "quarry.lexical_index"

OUTPUT_FIELDS: Final = [CHUNK_ID, DOC_ID, CHUNK_INDEX, TEXT, TITLE, SOURCE, METADATA]

MAX_TEXT_CHARS: Final = 16_384
MAX_DOC_ID_CHARS: Final = 512


def build_schema(dim: int, lexical: bool = True) -> Any:
    """The layout of a new collection; ``lexical=False`` builds the one collections had before
    the ``lexical`` field (BM25 over ``text``), which rag and ingest still serve."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    bm25_input = LEXICAL if lexical else TEXT
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(CHUNK_ID, DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field(DOC_ID, DataType.VARCHAR, max_length=MAX_DOC_ID_CHARS)
    schema.add_field(DOC_HASH, DataType.VARCHAR, max_length=64)
    schema.add_field(CHUNK_INDEX, DataType.INT64)
    schema.add_field(TEXT, DataType.VARCHAR, max_length=MAX_TEXT_CHARS * 4, enable_analyzer=not lexical)
    schema.add_field(TITLE, DataType.VARCHAR, max_length=1024)
    schema.add_field(SOURCE, DataType.VARCHAR, max_length=2048)
    schema.add_field(METADATA, DataType.JSON)
    schema.add_field(DENSE, DataType.FLOAT_VECTOR, dim=dim)
    if lexical:
        # Normalised words are never longer than the title and text they come from.
        schema.add_field(
            LEXICAL, DataType.VARCHAR, max_length=(MAX_TEXT_CHARS + 1024) * 4, enable_analyzer=True
        )
    schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name=f"{bm25_input}_bm25",
            function_type=FunctionType.BM25,
            input_field_names=[bm25_input],
            output_field_names=[SPARSE],
        )
    )
    return schema


def with_lexical(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its ``lexical`` field, for a collection that has one."""
    return {**row, LEXICAL: lexical_text(row[TITLE], row[TEXT])}


def bm25_input(description: dict[str, Any]) -> str:
    """The field a collection's BM25 function reads (``describe_collection``'s answer):
    ``lexical``, or ``text`` in collections made before it."""
    from pymilvus import FunctionType

    for function in description.get("functions") or []:
        if function.get("type") == FunctionType.BM25:
            inputs = function.get("input_field_names") or []
            if inputs:
                return str(inputs[0])
    return TEXT


def lexical_index_path(description: dict[str, Any]) -> str | None:
    """The lexical index file named by a collection (``describe_collection``'s answer), if any."""
    path = (description.get("properties") or {}).get(LEXICAL_INDEX_PROPERTY)
    return str(path) if path else None


def build_index_params(client: Any, dense_index: str = "AUTOINDEX") -> Any:
    params = client.prepare_index_params()
    params.add_index(DENSE, index_type=dense_index, metric_type="COSINE")
    params.add_index(SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return params


# Milvus collection names: a letter or underscore, then letters, digits, underscores.
COLLECTION_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
