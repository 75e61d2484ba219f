"""A torch.nn.Embedding look-alike whose weight lives in a service table (needs `torch`).

    table = RemoteTorchEmbedding(client, "words")
    vectors = table(ids)                    # (*ids.shape, dim), rows from the service
    loss = model(vectors).sum()
    loss.backward()                         # pushes the sparse gradient of the rows to the service
    optimizer.step()                        # the local parameters (the table is not among them)
    table.apply_gradients()                 # the table's step: replaces optimizer.step() for it

The forward output requires grad through an internal leaf tensor (`anchor`, not a Parameter, so
`model.parameters()` and any local optimizer leave the table alone). A custom autograd Function
returns the looked-up rows and, on backward, sends (ids, grad rows) to the service as a gradient
push; duplicate ids are sent as they are, the server sums them (as a sparse nn.Embedding's
coalesced gradient does). With `apply_on_backward=True` every backward is its own step
(asynchronous training). Unsupported nn.Embedding options: padding_idx, max_norm,
scale_grad_by_freq.

A dynamic table (any 64-bit id, rows made on first use) works the same way: ids are int64 tensors
of hashed keys, any value. uint64 keys are the int64 of the same bits: pass
`ids.view(torch.int64)` (a view, no copy), or a torch.uint64 tensor, which is read that way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from service.client import EmbeddingClient

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
ID_DTYPES = {torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
             *([torch.uint64] if hasattr(torch, "uint64") else [])}


class _RemoteRows(torch.autograd.Function):
    """Forward: the rows looked up (given as numpy). Backward: push the rows' gradient."""

    @staticmethod
    def forward(
        ctx: Any, anchor: torch.Tensor, rows: np.ndarray, ids: np.ndarray, step: int,
        module: RemoteTorchEmbedding,
    ) -> torch.Tensor:
        ctx.ids, ctx.step, ctx.module = ids, step, module
        return torch.from_numpy(rows)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[None, ...]:
        grads = np.ascontiguousarray(grad_output.detach().cpu().numpy())  # (*ids.shape, dim)
        ctx.module.push(ctx.ids, grads, ctx.step)
        return None, None, None, None, None


# torch's Function.apply has no annotations; it returns what forward returns
_remote_rows: Callable[..., torch.Tensor] = _RemoteRows.apply


class RemoteTorchEmbedding(torch.nn.Module):
    """nn.Embedding for forward, with the weight matrix in the service table `table`."""

    def __init__(
        self,
        client: EmbeddingClient,
        table: str,
        *,
        apply_on_backward: bool = False,
        send_step: bool = True,
    ) -> None:
        super().__init__()
        info = client.get_table(table)
        self.client = client
        self.table = table
        self.num_embeddings = info.num_embeddings  # None for a dynamic table
        self.embedding_dim = info.embedding_dim
        self.dtype = TORCH_DTYPES[info.dtype]
        self.apply_on_backward = apply_on_backward
        self.send_step = send_step
        self.anchor = torch.zeros((), dtype=self.dtype, requires_grad=True)  # autograd's handle

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dtype not in ID_DTYPES:
            raise TypeError(f"input must be an integer tensor of ids, got dtype {input.dtype}")
        ids = input.detach().cpu().numpy()
        # uint64 keys are the int64 of the same bits (a view); narrower integers widen
        ids = ids.view(np.int64) if ids.dtype == np.uint64 else ids.astype(np.int64, copy=False)
        rows, step = self.client.lookup_with_step(self.table, ids)
        if not rows.flags.writeable:  # torch wants memory it may write to
            rows = rows.copy()
        if not torch.is_grad_enabled():
            return torch.from_numpy(rows)
        return _remote_rows(self.anchor, rows, ids, step, self)

    def push(self, ids: np.ndarray, grads: np.ndarray, step: int | None = None) -> Any:
        """Send the gradient of rows `ids` (the backward pass calls this)."""
        return self.client.push_gradients(
            self.table, ids, grads, apply=self.apply_on_backward,
            step=step if self.send_step else None,
        )

    def apply_gradients(self, lr: float | None = None, average: bool = False) -> Any:
        """The table optimizer's step over the pushed rows: optimizer.step() for this table."""
        return self.client.apply(self.table, lr=lr, average=average)

    @property
    def weight(self) -> torch.Tensor:
        """The whole table, fetched from the service (a copy: changing it changes nothing).
        A dynamic table has no matrix: client.export_weights gives its ids and rows."""
        if self.num_embeddings is None:
            raise RuntimeError(f"table {self.table!r} is dynamic: it has no weight matrix; "
                                 "client.export_weights() gives its ids and rows")
        rows = self.client.lookup(self.table, np.arange(self.num_embeddings))
        return torch.from_numpy(np.array(rows))

    def extra_repr(self) -> str:
        return (f"table={self.table!r}, {self.num_embeddings}, {self.embedding_dim}, "
                f"apply_on_backward={self.apply_on_backward}")
