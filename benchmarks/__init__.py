"""Benchmark harness of the gateway: `.venv/bin/python benchmarks/run.py` (see benchmarks/BENCHMARKS.md)."""
