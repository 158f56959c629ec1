"""Benchmarks: ``python -m bench ingest [--events N ...]`` (see docs/benchmarks.md)."""
