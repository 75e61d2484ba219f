"""Training against the service: the reference layer over the wire, and a PyTorch module.

`RemoteEmbedding` needs only numpy; `RemoteTorchEmbedding` needs torch (`pip install
'embedding-service[torch]'`) and imports it only when first used, so this package imports
without it.
"""

from __future__ import annotations

from typing import Any

from service.training.layer import RemoteEmbedding

__all__ = ["RemoteEmbedding", "RemoteTorchEmbedding"]


def __getattr__(name: str) -> Any:
    if name == "RemoteTorchEmbedding":
        from service.training.torch_embedding import RemoteTorchEmbedding

        return RemoteTorchEmbedding
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
