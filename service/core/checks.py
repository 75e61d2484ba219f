"""What a lookup or a push must satisfy before it touches a table: integer ids in range,
gradients of the right shape, a step that is not too stale. Each failure is an InvalidRequest
(StaleGradient for staleness) whose sentence names the field and the value."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from service.core.errors import InvalidRequest, StaleGradient


def check_id_kind(ids: np.ndarray) -> None:
    if ids.dtype.kind not in "iu":
        raise InvalidRequest(f"ids must be integers, got dtype {ids.dtype}")


def check_id_range(low: int, high: int, num_embeddings: int, table: str) -> None:
    """The lowest and highest id of a request must lie in [0, num_embeddings)."""
    if low < 0:
        raise InvalidRequest(f"ids must be >= 0, got {low}")
    if high >= num_embeddings:
        raise InvalidRequest(
            f"ids must be < num_embeddings={num_embeddings} of table {table!r}, got {high}"
        )


def check_ids(ids: np.ndarray, num_embeddings: int, table: str) -> None:
    """ids must be integers in [0, num_embeddings). (On every lookup: the common case makes no
    further call.)"""
    if ids.dtype.kind not in "iu":
        check_id_kind(ids)
    if ids.size:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= num_embeddings:
            check_id_range(low, high, num_embeddings, table)


def check_grads(ids: np.ndarray, grads: np.ndarray, embedding_dim: int) -> None:
    """grads must be numbers of shape ids.shape + (embedding_dim,). (Whether they are finite
    is checked on their sums: a NaN or infinity makes its row's sum non-finite.)"""
    expected = (*ids.shape, embedding_dim)
    if grads.shape != expected:
        raise InvalidRequest(
            f"grads must have shape ids.shape + (embedding_dim,) = {list(expected)}, "
            f"got {list(grads.shape)}"
        )
    if grads.dtype.kind not in "fiu":
        raise InvalidRequest(f"grads must be numbers, got dtype {grads.dtype}")


def check_step(step: int | None) -> None:
    if step is not None and step < 0:
        raise InvalidRequest(f"step must be >= 0, got {step}")


def check_whole_push(ids: np.ndarray, grads: np.ndarray, step: int | None, embedding_dim: int,
                     check_table_ids: Callable[[np.ndarray], None]) -> None:
    """A push checked whole before any part of it is sent on (cluster mode: a front, and the
    leader's server for a push that steps the table or carries a step): id kind, the table's
    ids (`check_table_ids`), grads' shape and kind, step, and finite grads, so a refusal is the
    single-process sentence and no shard changes."""
    check_id_kind(ids)
    check_table_ids(ids)
    check_grads(ids, grads, embedding_dim)
    check_step(step)
    if grads.dtype.kind == "f" and grads.size and not np.isfinite(grads).all():
        raise InvalidRequest("grads must be finite, got NaN or infinity")


def check_staleness(
    step: int | None, table_step: int, max_staleness: int | None, table: str
) -> None:
    """A gradient computed at `step` may be applied to a table at `table_step` if it is not
    from the future and at most max_staleness steps old."""
    if step is None:
        return
    if step > table_step:
        raise InvalidRequest(
            f"step {step} is ahead of table {table!r}, which is at step {table_step}"
        )
    staleness = table_step - step
    if max_staleness is not None and staleness > max_staleness:
        raise StaleGradient(
            f"gradient computed at step {step} is {staleness} steps stale; table "
            f"{table!r} is at step {table_step} and accepts at most "
            f"max_staleness={max_staleness}"
        )
