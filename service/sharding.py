"""Which shard holds a key: a stable 64-bit hash of the key, shared by server and client.

In cluster mode (service.cluster) a table's rows are spread over S shards by their key (the id
of a fixed table, the int64 key of a dynamic one): shard(key) = the high 32 bits of a 64-bit
mix of the key, scaled to [0, S) (Lemire's multiply-shift, no modulo bias worth the name:
at most S / 2^32). The mix is splitmix64's finalizer of the key's bits xor a salt of its own,
so it is independent of the hash the dynamic tables' key index uses inside a shard (the same
hash would hand each shard keys from one slice of that index's buckets only). It is integer
arithmetic on uint64 words: the same shard for the same key in every process, on every
machine, in every numpy version. The SDK imports this module (numpy only, like service/npy.py)
to send each key to its shard itself.

    >>> shard_of(np.array([0, 1, 2, 3]), 2)
    array([...])                                   # each 0 or 1, the same everywhere
    >>> parts = split(ids, 2)                      # ids by shard, each part in request order
    >>> rows = gather(parts, [rows_of_0, rows_of_1], dim, dtype)   # back in request order
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SALT = np.uint64(0xD1B54A32D192ED03)  # xor-ed into every key before mixing (see above)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)
MAX_SHARDS = 1024
FEW_SHARDS = 8  # up to this many, one pass per shard (flatnonzero) beats a stable sort


def keys_of(ids: np.ndarray) -> np.ndarray:
    """Integer ids as the uint64 words that are hashed: int64 values' two's-complement bits,
    uint64 values as they are (so a uint64 key and the int64 with the same bits are one key)."""
    ids = np.asarray(ids)
    if ids.dtype == np.uint64:
        return ids.reshape(-1)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"keys must be integers, got dtype {ids.dtype}")
    return ids.reshape(-1).astype(np.int64, copy=False).view(np.uint64)


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """(n,) int64: the shard in [0, shards) of each id (any integer array, flattened)."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be in [1, {MAX_SHARDS}], got {shards}")
    words = keys_of(ids) ^ SALT  # (n,) a new array: mixed in place below
    words ^= words >> _S30
    words *= _M1
    words ^= words >> _S27
    words *= _M2
    words ^= words >> _S31
    words >>= _S32
    words *= np.uint64(shards)
    words >>= _S32
    owner: np.ndarray = words.view(np.int64)
    return owner


@dataclass(frozen=True)
class Split:
    """A request's ids by shard: `positions[k]` (ascending int64) are the places in the
    flattened request of the ids shard k holds, so each part keeps the request's order."""

    shards: int
    size: int  # ids in the request
    positions: list[np.ndarray]

    def part(self, values: np.ndarray, shard: int) -> np.ndarray:
        """The rows of `values` (flattened to (size, ...)) that go to `shard`, in order."""
        part: np.ndarray = values[self.positions[shard]]
        return part

    def parts(self, values: np.ndarray) -> list[np.ndarray]:
        return [values[where] for where in self.positions]


def split(ids: np.ndarray, shards: int) -> Split:
    """Where each id of a request goes: its positions, shard by shard, in request order."""
    flat = np.asarray(ids).reshape(-1)
    if shards == 1:
        return Split(1, flat.size, [np.arange(flat.size, dtype=np.int64)])
    owner = shard_of(flat, shards)  # (n,)
    if shards <= FEW_SHARDS:
        positions = [np.flatnonzero(owner == shard) for shard in range(shards)]
    else:
        order = np.argsort(owner, kind="stable")  # (n,) grouped by shard, request order kept
        bounds = np.searchsorted(owner[order], np.arange(shards + 1))
        positions = [order[bounds[k] : bounds[k + 1]] for k in range(shards)]
    return Split(shards, flat.size, positions)


def gather(split_ids: Split, parts: list[np.ndarray], tail: tuple[int, ...],
           dtype: np.dtype) -> np.ndarray:
    """(size, *tail) rows in request order from each shard's rows `parts[k]` (one row per
    position of that shard, in its order)."""
    out = np.empty((split_ids.size, *tail), dtype=dtype)
    for where, rows in zip(split_ids.positions, parts, strict=True):
        out[where] = rows
    return out


__all__ = ["MAX_SHARDS", "Split", "gather", "keys_of", "shard_of", "split"]
