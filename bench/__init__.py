"""Benchmarks: ``python -m bench.<topic>``; each prints its figures."""
