"""Matrix factorization trained with BPR (Rendle et al. 2009): a user's clicked item should
score above an item drawn at random; score(u, i) = <user_u, item_i>.

For a batch of (user, clicked item, random item): x = <u, p> - <u, n>, loss = -log sigmoid(x)
averaged over the batch, plus reg / 2 * (|u|^2 + |p|^2 + |n|^2). Its gradient by hand:
d/du = -(1 - sigmoid(x)) (p - n) + reg u, d/dp = -(1 - sigmoid(x)) u + reg p,
d/dn = (1 - sigmoid(x)) u + reg n, each divided by the batch size. The rows live in the service
(two RemoteEmbedding layers, looked up by hashed id); the gradients are pushed with apply=True,
so each push is a step of the tables' optimizer on the rows it touched.
"""

from __future__ import annotations

import numpy as np

from service.training import RemoteEmbedding


class BPR:
    def __init__(self, users: RemoteEmbedding, items: RemoteEmbedding, reg: float) -> None:
        self.users, self.items, self.reg = users, items, reg

    def step(self, user_keys: np.ndarray, clicked: np.ndarray, other: np.ndarray) -> float:
        """One batch: forward, loss, backward (two pushes). Keys (B,) uint64 each."""
        u = self.users.forward(user_keys)  # (B, dim)
        pair = self.items.forward(np.stack([clicked, other], axis=1))  # (B, 2, dim)
        p, n = pair[:, 0], pair[:, 1]
        x = np.einsum("bd,bd->b", u, p - n)  # (B,)
        size = len(x)
        loss = float(np.mean(np.logaddexp(0.0, -x)))  # -log sigmoid(x), overflow-free
        weight = (-1.0 / (1.0 + np.exp(np.clip(x, -60, 60))) / size)[:, None]  # (B, 1)
        grad_u = weight * (p - n) + self.reg / size * u
        grad_pair = np.stack([weight * u + self.reg / size * p,
                              -weight * u + self.reg / size * n], axis=1)  # (B, 2, dim)
        self.users.backward(grad_u.astype(u.dtype))
        self.items.backward(grad_pair.astype(pair.dtype))
        return loss
