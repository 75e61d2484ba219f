"""Is an apply's cost flat in the table size? And which exact reduction sums duplicate ids fastest?

    .venv/bin/python bench/apply_cost.py                 # both parts, about 3-5 minutes
    .venv/bin/python bench/apply_cost.py --part apply    # or --part reduce
    .venv/bin/python bench/apply_cost.py --sizes 10000 1000000 --repeats 15
    .venv/bin/python bench/apply_cost.py --part apply --kernels numpy

Part 1 (apply): for each optimizer, a table of V = 10^4 and one of V = 10^7 rows (dim 64,
float32) receive the same push of 4096 Zipf-distributed ids (about 1000 distinct rows); the apply
that follows is timed (median of --repeats). The ids are spread over each table by one fixed
permutation of the Zipf ranks, so the large table's rows sit far apart in memory, as they would
in use. Target: apply time at 10^7 / at 10^4 <= 1.5. The two tables of one optimizer take
turns (same machine load for both), then are freed: adam at 10^7 holds 3 arrays of 2.56 GB.

Part 2 (reduce): the ways to sum the 4096 x 64 gradient rows of repeated ids, each timed and
checked bit for bit against np.add.at on a dense (V, 64) buffer (exact = same bytes).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.core import EmbeddingTable, InitSpec, kernels, make_optimizer  # noqa: E402
from service.core.scatter import sum_duplicate_rows  # noqa: E402

DIM, PUSHED = 64, 4096
KINDS = ("sgd", "momentum", "adagrad", "adam")


def zipf_ids(num_embeddings: int, seed: int = 0) -> np.ndarray:
    """4096 ids: Zipf(1.2) ranks below 10^4 (the same for every table, so the same duplicate
    structure), mapped to rows by a multiplicative permutation of the table's rows."""
    ranks = np.random.default_rng(seed).zipf(1.2, PUSHED) % 10_000
    # 2654435761 is prime to 2 and 5, so this is one-to-one on [0, 10^k) for every k
    return (ranks * 2_654_435_761 + 12_345) % num_embeddings


def median_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def make_table(kind: str, num_embeddings: int) -> EmbeddingTable:
    table = EmbeddingTable("bench", num_embeddings, DIM, make_optimizer({"kind": kind}),
                           init=InitSpec(kind="zeros"))
    table.weights.fill(0.5)  # make every page resident, as in a table that has been trained
    for state in table.state.values():
        state.fill(0.25)
    return table


def time_apply(kind: str, sizes: list[int], repeats: int
               ) -> dict[int, tuple[float, float, float]]:
    """{size: (median push ms, median apply ms, fastest apply ms)}. The tables take turns, push
    then apply, so both see the same load from whatever else runs on the machine. Freed before
    returning."""
    tables = {size: make_table(kind, size) for size in sizes}
    ids = {size: zipf_ids(size) for size in sizes}
    grads = np.random.default_rng(1).standard_normal((PUSHED, DIM)).astype(np.float32)
    samples: dict[int, tuple[list[float], list[float]]] = {size: ([], []) for size in sizes}
    for repeat in range(repeats + 2):  # the first two warm up
        for size in sizes if repeat % 2 else sizes[::-1]:
            start = time.perf_counter()
            tables[size].push(ids[size], grads)
            pushed = time.perf_counter()
            tables[size].apply()
            done = time.perf_counter()
            if repeat >= 2:
                samples[size][0].append(pushed - start)
                samples[size][1].append(done - pushed)
    del tables
    gc.collect()
    return {size: (median_ms(push), median_ms(apply), min(apply) * 1e3)
            for size, (push, apply) in samples.items()}


def apply_part(sizes: list[int], repeats: int) -> None:
    small, large = sizes
    print(f"apply cost, dim {DIM} float32, {PUSHED} pushed ids "
          f"({len(np.unique(zipf_ids(small)))} distinct), median of {repeats}")
    small_name, large_name = f"V={small:.0e}", f"V={large:.0e}"
    print(f"{'optimizer':>10} | {'push ' + small_name:>13} {'push ' + large_name:>13} | "
          f"{'apply ' + small_name:>14} {'apply ' + large_name:>14} | ratio apply "
          "| ratio fastest")
    for kind in KINDS:
        times = time_apply(kind, sizes, repeats)
        (push_small, apply_small, best_small) = times[small]
        (push_large, apply_large, best_large) = times[large]
        print(f"{kind:>10} | {push_small:10.2f} ms {push_large:10.2f} ms | "
              f"{apply_small:11.2f} ms {apply_large:11.2f} ms | {apply_large / apply_small:11.2f} "
              f"| {best_large / best_small:13.2f}", flush=True)


# -- part 2: reductions ---------------------------------------------------------------------------
def dense_add_at(ids: np.ndarray, grads: np.ndarray, num_embeddings: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    dense = np.zeros((num_embeddings, grads.shape[1]), dtype=grads.dtype)
    np.add.at(dense, ids, grads)
    rows = np.unique(ids)
    return rows, dense[rows]


def unique_add_at_2d(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, slot = np.unique(ids, return_inverse=True)
    sums = np.zeros((len(rows), grads.shape[1]), dtype=grads.dtype)
    np.add.at(sums, slot, grads)
    return rows, sums


def sort_reduceat(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sums = np.add.reduceat(grads[order], starts, axis=0)
    sums += 0.0  # -0.0 -> +0.0, as a sum started from 0.0 would have it
    return sorted_ids[starts], sums


def bincount_per_column(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, slot = np.unique(ids, return_inverse=True)
    sums = np.empty((len(rows), grads.shape[1]), dtype=grads.dtype)
    for column in range(grads.shape[1]):
        sums[:, column] = np.bincount(slot, weights=grads[:, column], minlength=len(rows))
    return rows, sums


def bincount_flat(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, slot = np.unique(ids, return_inverse=True)
    dim = grads.shape[1]
    flat_index = (slot[:, None] * dim + np.arange(dim)).ravel()
    sums = np.bincount(flat_index, weights=grads.ravel(), minlength=len(rows) * dim)
    return rows, sums.reshape(len(rows), dim).astype(grads.dtype)


def kernels_on(backend: str) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The service's reduction (sum_duplicate_rows) on one kernel backend."""

    def reduce(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kernels.use(backend)
        return sum_duplicate_rows(ids, grads)

    return reduce


REDUCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "packed sort + compiled scatter (numba, service)": kernels_on("numba"),
    "np.unique + 1-D np.add.at (EMBED_KERNELS=numpy)": kernels_on("numpy"),
    "np.unique + 2-D np.add.at": unique_add_at_2d,
    "stable sort + np.add.reduceat": sort_reduceat,
    "np.unique + bincount per column": bincount_per_column,
    "np.unique + one flat bincount": bincount_flat,
}


def reduce_part(repeats: int) -> None:
    num_embeddings = 10**6
    ids = zipf_ids(num_embeddings)
    print(f"\nsumming duplicate ids: {PUSHED} x {DIM}, {len(np.unique(ids))} distinct rows, "
          f"median of {repeats}; exact = bytes equal to np.add.at on a dense buffer")
    for dtype in (np.float32, np.float64):
        grads = np.random.default_rng(2).standard_normal((PUSHED, DIM)).astype(dtype)
        expected_rows, expected_sums = dense_add_at(ids, grads, num_embeddings)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            dense_add_at(ids, grads, num_embeddings)
            samples.append(time.perf_counter() - start)
        print(f"  {np.dtype(dtype).name}: {'np.add.at on a dense (1e6, 64) buffer':<48} "
              f"{median_ms(samples):8.3f} ms  (the reference; scales with V)")
        for name, reduce in REDUCTIONS.items():
            rows, sums = reduce(ids, grads)
            exact = (np.array_equal(rows, expected_rows) and sums.dtype == expected_sums.dtype
                     and sums.tobytes() == expected_sums.tobytes())
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                reduce(ids, grads)
                samples.append(time.perf_counter() - start)
            print(f"  {np.dtype(dtype).name}: {name:<48} {median_ms(samples):8.3f} ms  "
                  f"exact={'yes' if exact else 'NO'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("apply", "reduce", "both"), default="both")
    parser.add_argument("--sizes", type=int, nargs=2, default=[10**4, 10**7])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--kernels", choices=kernels.BACKENDS, default="numba",
                        help="the kernel backend of part 1 (EMBED_KERNELS)")
    args = parser.parse_args()
    if args.part in ("apply", "both"):
        kernels.use(args.kernels)
        apply_part(args.sizes, args.repeats)
    if args.part in ("reduce", "both"):
        reduce_part(args.repeats)


if __name__ == "__main__":
    main()
