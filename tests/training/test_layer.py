"""RemoteEmbedding against the reference layer (tests/reference.py), over a real uvicorn.

With one push per apply the service's step is bit-identical to np.add.at + W -= lr * dW, so
the remote twin must give exactly the reference's outputs and weights, step after step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from service.client import EmbeddingClient, StaleGradientError
from service.training import RemoteEmbedding
from tests.reference import ReferenceEmbedding

pytestmark = pytest.mark.e2e


def twins(client: EmbeddingClient, make_table: Callable[..., str], dtype: str, lr: float,
          apply: bool = False) -> tuple[RemoteEmbedding, ReferenceEmbedding]:
    name = make_table(50, 6, dtype=dtype, seed=7, init={"kind": "normal", "std": 1.0},
                      optimizer={"kind": "sgd", "lr": lr})
    remote = RemoteEmbedding(client, name, apply=apply)
    local = ReferenceEmbedding(np.array(remote.weights))  # the same initial weights
    return remote, local


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("apply", [False, True], ids=["trainer-applies", "apply-on-push"])
def test_remote_twin_matches_the_reference_layer_step_for_step(
    client: EmbeddingClient, make_table: Callable[..., str], dtype: str, apply: bool
) -> None:
    lr = 0.1
    remote, local = twins(client, make_table, dtype, lr, apply=apply)
    rng = np.random.default_rng(0)
    for step in range(1, 9):
        idx = rng.integers(0, 12, size=(4, 5))  # ids 0..11 over 20 slots: many duplicates
        out_remote, out_local = remote.forward(idx), local.forward(idx)
        assert out_remote.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out_remote, out_local)  # (4, 5, 6)
        dout = (out_local - rng.standard_normal(out_local.shape)).astype(dtype)  # a real loss'
        remote.backward(dout)
        local.backward(dout)
        if not apply:
            assert remote.apply_gradients().step == step
        local.sgd(lr)
        np.testing.assert_array_equal(remote.weights, local.params[0])
    assert client.get_table(remote.table).step == 8


def test_the_notebook_example_a_scalar_id(
    client: EmbeddingClient, make_table: Callable[..., str]
) -> None:
    """The seed notebook: V=10, D=3, idx=2, dout=arange(D): only row 2 gets [0, 1, 2]."""
    name = make_table(10, 3, dtype="float64", seed=0, optimizer={"kind": "sgd", "lr": 1.0})
    remote = RemoteEmbedding(client, name)
    before = np.array(remote.weights)
    out = remote.forward(2)
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, before[2])
    remote.backward(np.arange(3))
    assert remote.apply_gradients().rows_updated == 1
    expected = before.copy()
    expected[2] -= np.arange(3)
    np.testing.assert_array_equal(remote.weights, expected)


class LocalSGD:
    """The seed's optimizer: `params[i] -= lr * grads[i]` for what the model lists."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def update(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        for param, grad in zip(params, grads, strict=True):
            param -= self.lr * grad


class EmbedThenLinear:
    """loss = 0.5 * |embed(idx).mean(axis=1) @ W - y|^2 / batch, with the embedding layer given."""

    def __init__(self, embedding: RemoteEmbedding | ReferenceEmbedding, linear: np.ndarray):
        self.embedding = embedding
        self.params = [*embedding.params, linear]
        self.grads = [*embedding.grads, np.zeros_like(linear)]

    def step(self, idx: np.ndarray, y: np.ndarray) -> float:
        linear = self.params[-1]
        rows = self.embedding.forward(idx)  # (B, C, D)
        hidden = rows.mean(axis=1)  # (B, D)
        error = hidden @ linear - y  # (B, out)
        self.grads[-1][...] = hidden.T @ error / len(y)  # (D, out)
        dhidden = error @ linear.T / len(y)  # (B, D)
        drows = np.repeat(dhidden[:, None, :] / idx.shape[1], idx.shape[1], axis=1)  # (B, C, D)
        self.embedding.backward(drows)
        return float(0.5 * (error**2).sum() / len(y))


def test_a_local_optimizer_skips_the_remote_layer_and_the_trainer_applies(
    client: EmbeddingClient, make_table: Callable[..., str]
) -> None:
    """The same model, once all local and once with its embedding in the service: the local
    optimizer updates what `params` lists (the linear layer only, remotely), the trainer calls
    apply for the table, and both runs stay bit-identical."""
    lr = 0.5
    remote, local = twins(client, make_table, "float64", lr)
    assert remote.params == [] and remote.grads == []
    rng = np.random.default_rng(1)
    linear = rng.standard_normal((6, 2))
    local_model = EmbedThenLinear(local, linear.copy())
    remote_model = EmbedThenLinear(remote, linear.copy())
    assert len(local_model.params) == 2 and len(remote_model.params) == 1
    optimizer = LocalSGD(lr)
    for _ in range(5):
        idx, y = rng.integers(0, 50, size=(8, 4)), rng.standard_normal((8, 2))
        assert remote_model.step(idx, y) == local_model.step(idx, y)
        optimizer.update(local_model.params, local_model.grads)
        optimizer.update(remote_model.params, remote_model.grads)
        remote.apply_gradients()
        np.testing.assert_array_equal(remote_model.params[-1], local_model.params[-1])
        np.testing.assert_array_equal(remote.weights, local.params[0])


def test_a_push_carries_the_lookup_step_so_stale_gradients_are_refused(
    client: EmbeddingClient, make_table: Callable[..., str]
) -> None:
    name = make_table(10, 2, seed=0, max_staleness=0)
    slow = RemoteEmbedding(client, name, apply=True)
    fast = RemoteEmbedding(client, name, apply=True)
    slow.forward([1, 2])
    fast.forward([2, 3])
    fast.backward(np.ones((2, 2), dtype=np.float32))  # the table moves to step 1
    with pytest.raises(StaleGradientError) as caught:
        slow.backward(np.ones((2, 2), dtype=np.float32))  # computed at step 0
    assert caught.value.status == 409
    unchecked = RemoteEmbedding(client, name, apply=True, send_step=False)
    unchecked.forward([1])
    fast.forward([1])
    fast.backward(np.ones((1, 2), dtype=np.float32))
    unchecked.backward(np.ones((1, 2), dtype=np.float32))  # no step sent: accepted
    assert client.get_table(name).step == 3


def test_backward_before_forward_is_an_error(
    client: EmbeddingClient, make_table: Callable[..., str]
) -> None:
    layer = RemoteEmbedding(client, make_table(4, 2))
    with pytest.raises(RuntimeError, match="needs a forward"):
        layer.backward(np.zeros((1, 2)))
