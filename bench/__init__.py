"""Benchmark harness: ``python bench/run.py [scenario ...]`` (see bench/README.md)."""
