"""Answering: the prompt, generation, sentence-level verification, extractive answers, safety."""
