"""The Milvus collection layout that ingest writes and rag reads.

Chunk ids are the primary key, so re-indexing the same chunk overwrites it.
``sparse`` is filled by Milvus itself from ``text`` (its BM25 function), which
gives full-text search without a second store.
"""

from __future__ import annotations

from typing import Any, Final

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

OUTPUT_FIELDS: Final = [CHUNK_ID, DOC_ID, CHUNK_INDEX, TEXT, TITLE, SOURCE, METADATA]

MAX_TEXT_CHARS: Final = 16_384
MAX_DOC_ID_CHARS: Final = 512


def build_schema(dim: int) -> Any:
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(CHUNK_ID, DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field(DOC_ID, DataType.VARCHAR, max_length=MAX_DOC_ID_CHARS)
    schema.add_field(DOC_HASH, DataType.VARCHAR, max_length=64)
    schema.add_field(CHUNK_INDEX, DataType.INT64)
    schema.add_field(TEXT, DataType.VARCHAR, max_length=MAX_TEXT_CHARS * 4, enable_analyzer=True)
    schema.add_field(TITLE, DataType.VARCHAR, max_length=1024)
    schema.add_field(SOURCE, DataType.VARCHAR, max_length=2048)
    schema.add_field(METADATA, DataType.JSON)
    schema.add_field(DENSE, DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="text_bm25",
            function_type=FunctionType.BM25,
            input_field_names=[TEXT],
            output_field_names=[SPARSE],
        )
    )
    return schema


def build_index_params(client: Any, dense_index: str = "AUTOINDEX") -> Any:
    params = client.prepare_index_params()
    params.add_index(DENSE, index_type=dense_index, metric_type="COSINE")
    params.add_index(SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return params


# Milvus collection names: a letter or underscore, then letters, digits, underscores.
COLLECTION_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
