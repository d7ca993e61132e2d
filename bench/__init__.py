"""Benchmarks: each script prints a table; results are recorded in docs/benchmarks.md."""
