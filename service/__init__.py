"""Embedding parameter service: named embedding tables served to remote trainers over HTTP."""

__version__ = "0.1.0"

__all__ = ["__version__"]
