"""Embedder service: sentence-transformers behind an OpenAI-compatible ``/v1/embeddings``."""
