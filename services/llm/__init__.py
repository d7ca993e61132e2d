"""LLM service: OpenAI-compatible chat completions on llama.cpp (CPU) or vLLM (GPU)."""
