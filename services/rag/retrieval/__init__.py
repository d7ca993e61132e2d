"""Retrieval: dense, BM25 and hybrid search over Milvus, guarded, with optional reranking."""
