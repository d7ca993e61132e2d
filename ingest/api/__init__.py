"""The ingest HTTP API: collections, documents and jobs (``python -m ingest.api``)."""
