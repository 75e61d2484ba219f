"""Runnable examples that train models against the embedding service (python -m examples.X)."""
