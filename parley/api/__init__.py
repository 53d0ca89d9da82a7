"""Parley's native HTTP API (v1)."""
