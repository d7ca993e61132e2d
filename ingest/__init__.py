"""Ingest: load documents, chunk them, embed through the embedder service, index into Milvus."""
