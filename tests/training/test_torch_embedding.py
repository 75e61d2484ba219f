"""RemoteTorchEmbedding against a local nn.Embedding(sparse=True) and the same torch optimizer,
over a real uvicorn: after several steps the weights agree (float64, within 1e-10)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from service.client import EmbeddingClient

torch = pytest.importorskip("torch")

from service.training import RemoteTorchEmbedding  # noqa: E402

pytestmark = pytest.mark.e2e

NUM, DIM = 30, 5
# (the service table's optimizer, the same optimizer in torch for a sparse nn.Embedding)
OPTIMIZERS: dict[str, tuple[dict[str, Any], Callable[..., Any]]] = {
    "sgd": ({"kind": "sgd", "lr": 0.3}, lambda params: torch.optim.SGD(params, lr=0.3)),
    "adagrad": (
        {"kind": "adagrad", "lr": 0.2, "eps": 1e-10, "initial_accumulator_value": 0.1},
        lambda params: torch.optim.Adagrad(params, lr=0.2, eps=1e-10,
                                           initial_accumulator_value=0.1),
    ),
    "sparse-adam": (
        {"kind": "adam", "lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-8},
        lambda params: torch.optim.SparseAdam(params, lr=0.05, betas=(0.8, 0.95), eps=1e-8),
    ),
}


def remote_and_local(client: EmbeddingClient, make_table: Callable[..., str],
                     optimizer: dict[str, Any]) -> tuple[Any, Any]:
    name = make_table(NUM, DIM, dtype="float64", seed=3, init={"kind": "normal", "std": 1.0},
                      optimizer=optimizer)
    remote = RemoteTorchEmbedding(client, name)
    local = torch.nn.Embedding(NUM, DIM, sparse=True, dtype=torch.float64)
    with torch.no_grad():
        local.weight.copy_(remote.weight)
    return remote, local


def loss_of(vectors: Any, targets: Any) -> Any:
    """A loss that depends on the rows non-linearly, so every step's gradient is new."""
    return (torch.tanh(vectors.sum(dim=1)) - targets).pow(2).sum()


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_remote_module_trains_like_a_local_sparse_embedding(
    client: EmbeddingClient, make_table: Callable[..., str], kind: str
) -> None:
    table_optimizer, torch_optimizer = OPTIMIZERS[kind]
    remote, local = remote_and_local(client, make_table, table_optimizer)
    optimizer = torch_optimizer(local.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        ids = torch.randint(0, 12, (7, 3), generator=generator)  # 21 ids of 12: duplicates
        targets = torch.randn(7, DIM, generator=generator, dtype=torch.float64)
        remote_vectors = remote(ids)
        local_vectors = local(ids)
        assert remote_vectors.shape == (7, 3, DIM) and remote_vectors.dtype == torch.float64
        assert remote_vectors.requires_grad
        torch.testing.assert_close(remote_vectors, local_vectors, rtol=0, atol=1e-10)
        optimizer.zero_grad()
        loss_of(local_vectors, targets).backward()
        with torch.sparse.check_sparse_tensor_invariants():  # opting in silences torch's warning
            optimizer.step()
        loss_of(remote_vectors, targets).backward()  # pushes the gradient
        remote.apply_gradients()  # instead of optimizer.step() for the table
    torch.testing.assert_close(remote.weight, local.weight.detach(), rtol=0, atol=1e-10)
    assert not torch.equal(remote.weight, remote_and_local(client, make_table,
                                                           table_optimizer)[0].weight)


def test_with_local_layers_the_local_optimizer_steps_them_and_apply_steps_the_table(
    client: EmbeddingClient, make_table: Callable[..., str]
) -> None:
    """Embedding -> Linear: the local SGD updates the Linear (the table is not among the
    module's parameters), apply updates the table; both agree with the all-local model."""
    remote, local = remote_and_local(client, make_table, OPTIMIZERS["sgd"][0])
    torch.manual_seed(0)
    head = torch.nn.Linear(DIM, 2, dtype=torch.float64)
    local_head = torch.nn.Linear(DIM, 2, dtype=torch.float64)
    local_head.load_state_dict(head.state_dict())
    remote_model = torch.nn.Sequential(remote, head)
    local_model = torch.nn.Sequential(local, local_head)
    assert [p.shape for p in remote_model.parameters()] == [(2, DIM), (2,)]
    remote_optimizer = torch.optim.SGD(remote_model.parameters(), lr=0.3)
    local_optimizer = torch.optim.SGD(local_model.parameters(), lr=0.3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        ids = torch.randint(0, NUM, (16,), generator=generator)
        labels = torch.randint(0, 2, (16,), generator=generator)
        for model, optimizer in ((remote_model, remote_optimizer), (local_model, local_optimizer)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(ids), labels).backward()
            optimizer.step()
        remote.apply_gradients()
    torch.testing.assert_close(head.weight, local_head.weight, rtol=0, atol=1e-10)
    torch.testing.assert_close(remote.weight, local.weight.detach(), rtol=0, atol=1e-10)


def test_backward_pushes_once_with_duplicates_and_no_grad_pushes_nothing(
    client: EmbeddingClient, make_table: Callable[..., str]
) -> None:
    name = make_table(10, 2, dtype="float64", seed=0, optimizer={"kind": "sgd", "lr": 1.0})
    remote = RemoteTorchEmbedding(client, name)
    before = remote.weight
    with torch.no_grad():
        assert not remote(torch.tensor([1, 2])).requires_grad
    assert client.get_table(name).pending_rows == 0
    vectors = remote(torch.tensor([[4, 4], [4, 7]]))  # (2, 2, 2)
    (vectors * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum().backward()
    assert client.get_table(name).pending_rows == 2  # rows 4 and 7
    assert remote.apply_gradients().rows_updated == 2
    expected = before.clone()
    expected[4] -= 3 * torch.tensor([1.0, 2.0], dtype=torch.float64)  # three uses of row 4 sum
    expected[7] -= torch.tensor([1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(remote.weight, expected, rtol=0, atol=0)
    assert remote.anchor.grad is None


def test_apply_on_backward_steps_at_once_and_float_ids_are_refused(
    client: EmbeddingClient, make_table: Callable[..., str]
) -> None:
    name = make_table(6, 3, seed=0, optimizer={"kind": "sgd", "lr": 0.5})
    remote = RemoteTorchEmbedding(client, name, apply_on_backward=True)
    assert remote.dtype == torch.float32 and "apply_on_backward=True" in repr(remote)
    remote(torch.tensor([0, 5])).sum().backward()
    info = client.get_table(name)
    assert (info.step, info.pending_rows) == (1, 0)
    with pytest.raises(TypeError, match="integer tensor"):
        remote(torch.tensor([0.0]))


def test_the_package_imports_torch_only_when_the_module_is_asked_for() -> None:
    import subprocess
    import sys

    code = ("import sys, service.training as t; assert 'torch' not in sys.modules; "
            "t.RemoteTorchEmbedding; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_a_dynamic_table_trains_like_a_local_embedding_of_its_initial_rows(
    client: EmbeddingClient, kind: str
) -> None:
    """Hashed 64-bit ids (int64 tensors; uint64 ones are the same keys) into a dynamic table:
    the same steps as a local sparse nn.Embedding whose row i starts as key i's initial row."""
    import numpy as np

    table_optimizer, torch_optimizer = OPTIMIZERS[kind]
    name = f"dynamic-{kind}"
    client.create_table(name, embedding_dim=DIM, dtype="float64", seed=3,
                        init={"kind": "normal", "std": 1.0}, optimizer=table_optimizer,
                        dynamic={})
    try:
        keys = torch.tensor(np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 12))
        remote = RemoteTorchEmbedding(client, name)
        assert remote.num_embeddings is None
        local = torch.nn.Embedding(12, DIM, sparse=True, dtype=torch.float64)
        with torch.no_grad():
            local.weight.copy_(remote(keys))
        optimizer = torch_optimizer(local.parameters())
        generator = torch.Generator().manual_seed(0)
        for step in range(6):
            rows = torch.randint(0, 12, (7, 3), generator=generator)
            targets = torch.randn(7, DIM, generator=generator, dtype=torch.float64)
            ids = keys[rows]
            if step % 2 and hasattr(torch, "uint64"):
                ids = ids.view(torch.uint64)  # the same keys, as uint64
            optimizer.zero_grad()
            loss_of(local(rows), targets).backward()
            with torch.sparse.check_sparse_tensor_invariants():
                optimizer.step()
            loss_of(remote(ids), targets).backward()
            remote.apply_gradients()
        torch.testing.assert_close(remote(keys).detach(), local.weight.detach(), rtol=0,
                                   atol=1e-10)
        assert client.get_table(name).rows == len(torch.unique(keys))
        with pytest.raises(RuntimeError, match="is dynamic"):
            remote.weight  # noqa: B018
    finally:
        client.delete_table(name)
