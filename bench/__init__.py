"""Benchmarks: ``python -m bench.<name>``; each prints its figures (see docs/BENCHMARKS.md)."""
