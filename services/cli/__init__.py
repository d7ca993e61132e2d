"""The ``quarry`` command line: run the suite locally, ask, ingest, manage keys."""
