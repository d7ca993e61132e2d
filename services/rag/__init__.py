"""RAG orchestrator: cache, embed, retrieve, generate, cite."""
