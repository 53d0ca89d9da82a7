"""Persistence: the schema, the engine, and migrations."""
