"""The reference embedding layer with its weights in a service table.

`RemoteEmbedding` has the reference layer's interface (`params`, `grads`, `forward(idx)`,
`backward(dout)`), so code written for the local layer trains against the service by swapping
the layer:

    layer = RemoteEmbedding(client, "words")        # instead of Embedding(W)
    out = layer.forward(idx)                         # W[idx], looked up in the service
    ...                                              # the rest of the model, locally
    layer.backward(dout)                             # pushes dout for idx: the server sums it

How it meets a local optimizer: its `params` and `grads` are empty lists, so an optimizer that
walks `model.params` / `model.grads` (SGD, Adam, ... of the local model) skips it. The table's
own optimizer (chosen when the table was created) takes the step instead, in one of two ways:

- synchronous: after backward, the trainer (or one coordinator for many trainers) calls
  `layer.apply_gradients()` (= client.apply(table)), next to its local `optimizer.update(...)`;
  pushes from several trainers sum until that apply.
- asynchronous: `RemoteEmbedding(client, "words", apply=True)`: every backward is its own
  optimizer step on the rows it touched (Hogwild-style; no coordinator needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from service.client import EmbeddingClient


class RemoteEmbedding:
    """Embedding layer whose weight matrix is the service table `table`.

    forward(idx) looks the rows up (idx: an id or an integer array of any shape; the result has
    shape idx.shape + (embedding_dim,)) and remembers idx and the table step it read. backward
    (dout) pushes dout, of that same shape, as the gradient of those rows (duplicate ids sum on
    the server, as np.add.at does). With `apply=True` each push is applied at once. With
    `send_step=True` the push carries the step of the lookup, so a table with max_staleness
    rejects gradients computed on weights that are too old (StaleGradientError).
    """

    def __init__(
        self,
        client: EmbeddingClient,
        table: str,
        *,
        apply: bool = False,
        send_step: bool = True,
    ) -> None:
        self.client = client
        self.table = table
        self.apply = apply
        self.send_step = send_step
        self.params: list[np.ndarray] = []  # the weights live in the service
        self.grads: list[np.ndarray] = []
        self.idx: np.ndarray | None = None
        self.step: int | None = None  # the table step of the last lookup

    def forward(self, idx: Any) -> np.ndarray:
        ids = np.asarray(idx)
        # a scalar id travels as shape (1,) (the client's .npy encoder makes 0-d arrays 1-d)
        vectors, step = self.client.lookup_with_step(self.table, ids)
        self.idx, self.step = ids, step
        return vectors

    def backward(self, dout: np.ndarray) -> None:
        if self.idx is None:
            raise RuntimeError(f"backward() on table {self.table!r} needs a forward() first")
        self.client.push_gradients(
            self.table, self.idx, np.asarray(dout), apply=self.apply,
            step=self.step if self.send_step else None,
        )

    def apply_gradients(self, lr: float | None = None, average: bool = False) -> Any:
        """The table optimizer's step over every row with a pending gradient (synchronous
        training); returns the client's ApplyResult."""
        return self.client.apply(self.table, lr=lr, average=average)

    @property
    def weights(self) -> np.ndarray:
        """The whole table, fetched from the service (for inspection and tests)."""
        info = self.client.get_table(self.table)
        if info.num_embeddings is None:
            raise RuntimeError(f"table {self.table!r} is dynamic: it has no weight matrix; "
                               "client.export_weights() gives its ids and rows")
        return self.client.lookup(self.table, np.arange(info.num_embeddings))

    def __repr__(self) -> str:
        mode = "apply on every push" if self.apply else "apply by the trainer"
        return f"RemoteEmbedding(table={self.table!r}, {mode})"
