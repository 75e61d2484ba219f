"""Embedding parameter service: named embedding tables served to remote trainers over HTTP.

The client is re-exported here: `from service import EmbeddingClient`.
"""

__version__ = "0.1.0"

from service import client  # noqa: E402  (after __version__, which the server imports)
from service.client import *  # noqa: E402, F403  (the client's public names, one list)

__all__ = [*client.__all__, "__version__"]
