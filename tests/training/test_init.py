"""service.training's public names."""

from __future__ import annotations

import pytest

import service.training
from service.training.layer import RemoteEmbedding


def test_public_names_are_exported() -> None:
    assert service.training.__all__ == ["RemoteEmbedding", "RemoteTorchEmbedding"]
    assert service.training.RemoteEmbedding is RemoteEmbedding
    assert set(service.training.__all__) <= set(dir(service.training))
    with pytest.raises(AttributeError, match="no attribute 'Missing'"):
        service.training.Missing  # noqa: B018


def test_the_torch_module_is_exported_when_torch_is_installed() -> None:
    pytest.importorskip("torch")
    from service.training.torch_embedding import RemoteTorchEmbedding

    assert service.training.RemoteTorchEmbedding is RemoteTorchEmbedding
