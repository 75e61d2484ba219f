"""Rows 4 and 8 of bench/compare.py: a push of 4096 Zipf ids with apply, over HTTP (row 4) and
in-process on the core alone (row 8), both against PyTorch's sparse embedding backward + SGD
step, all sides alternating run by run on the same ids and gradients.

The torch peer runs twice, at torch's default thread count and with one thread, and the faster
is the peer: on 2 cores shared with the service process (and, here, other jobs) torch's OpenMP
pool can run many times slower than one thread when another process holds a core. Both figures
are in the notes. The core side is an EmbeddingTable in this process on the same weights,
with the compiled kernels (and, for the notes, the numpy ones)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
from _report import Row
from peers import DenseReference, TorchSparseSGD, zipf_ids

from service.client import EmbeddingClient
from service.core import EmbeddingTable, kernels, make_optimizer

LABEL = "push 4096 Zipf ids + apply (SGD), rows/s"
CORE_LABEL = "core alone (no HTTP): push 4096 Zipf ids + apply (SGD), rows/s"


def rate(rows: float) -> str:
    return f"{rows / 1e6:.2f} M rows/s"


def on_backend(backend: str, step: Callable[[], object]) -> Callable[[], object]:
    """step() with the core's kernels on `backend` (switching costs microseconds)."""

    def run() -> object:
        kernels.use(backend)
        return step()

    return run


def push_rows(client: EmbeddingClient, table: str, weights: np.ndarray, lr: float,
              rng: np.random.Generator, setup: Any, runs: Callable[..., dict[str, float]],
              bare: EmbeddingClient | None = None) -> tuple[list[Row], list[str]]:
    """Rows 4 and 8 and their notes. `bare`: a client of bench/_bare_asgi.py on the same
    uvicorn, which takes the same push and answers it without doing anything (the floor of
    row 4: the server and the client moving the request, nothing else)."""
    ids = zipf_ids(rng, setup.rows, 4096)
    grads = rng.standard_normal((4096, weights.shape[1]), dtype=np.float32) * 0.01  # (4096, dim)
    core = EmbeddingTable("core", *weights.shape, make_optimizer({"kind": "sgd", "lr": lr}),
                          weights=weights.copy())
    sides: dict[str, Callable[[], object]] = {
        "ours": lambda: client.push_gradients(table, ids, grads, apply=True),
        "ours, push then apply": lambda: (client.push_gradients(table, ids, grads),
                                          client.apply(table)),
        "core": on_backend("numba", lambda: core.push(ids, grads, apply=True)),
        "core, numpy kernels": on_backend("numpy", lambda: core.push(ids, grads, apply=True)),
    }
    if bare is not None:
        sides["bare"] = lambda: bare.push_gradients(table, ids, grads, apply=True)
    notes = [f"rows 4, 8: {len(np.unique(ids))} distinct rows among the 4096 Zipf ids "
             "(exponent 1.1); the service's sums are bit-identical to np.add.at"]
    calls = setup.calls["push"]
    torch_names: list[str] = []
    try:
        import torch

        layer = TorchSparseSGD(weights, lr)
        default_threads = torch.get_num_threads()
        steps: list[Callable[[], None]] = []

        def torch_side(threads: int) -> Callable[[], object]:
            def step() -> object:
                torch.set_num_threads(threads)
                return steps.pop()()
            return step

        torch_names = [f"torch, {default_threads} threads", "torch, 1 thread"]
        sides[torch_names[0]] = torch_side(default_threads)
        sides[torch_names[1]] = torch_side(1)
    except ImportError:
        notes.append("rows 4, 8 without their peer: torch not installed (the bench extra has it)")
    all_runs: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(setup.repeats):  # each run needs fresh torch graphs: prepared run by run
        if torch_names:
            steps[:] = [layer.prepare(ids, grads) for _ in range(2 * (calls + 1))]
        for name, seconds in runs(sides, calls, 1).items():
            all_runs[name].append(seconds)
    if torch_names:
        torch.set_num_threads(default_threads)
    kernels.use("numba")
    took = {name: statistics.median(values) for name, values in all_runs.items()}
    dense = DenseReference(weights, lr)
    dense_took = runs({"dense": lambda: dense.step(ids, grads)}, setup.calls["dense"],
                      max(1, setup.repeats // 2))["dense"]
    notes.append(f"row 4: dense reference layer {rate(4096 / dense_took)}; the service does "
                 f"{dense_took / took['ours']:.0f}x its rows/s; push then apply as two requests "
                 f"{rate(4096 / took['ours, push then apply'])}")
    if bare is not None:
        notes.append(f"row 4: a bare ASGI app taking the same push on the same uvicorn, through "
                     f"the same client (no idempotency key checked, no arithmetic): "
                     f"{rate(4096 / took['bare'])}"
                     + (f" ({took[min(torch_names, key=took.__getitem__)] / took['bare']:.0%} of "
                        "torch)" if torch_names else ""))
    notes.append(f"row 8: the core on the numpy kernels (EMBED_KERNELS=numpy) "
                 f"{rate(4096 / took['core, numpy kernels'])}, "
                 f"{took['core, numpy kernels'] / took['core']:.1f}x the time of the numba ones")
    if not torch_names:
        return [Row(4, LABEL, rate(4096 / took["ours"]), "torch: skipped", None, 0.5),
                Row(8, CORE_LABEL, rate(4096 / took["core"]), "torch: skipped", None, 1.5)], notes
    peer = min(torch_names, key=lambda name: took[name])
    notes.append("rows 4, 8: torch's step " + ", ".join(
        f"{name} {took[name] * 1e3:.3f} ms" for name in torch_names) + f"; the peer is {peer}")
    peer_text = f"torch sparse+SGD {rate(4096 / took[peer])}"
    return [Row(4, LABEL, rate(4096 / took["ours"]), peer_text, took[peer] / took["ours"], 0.5),
            Row(8, CORE_LABEL, rate(4096 / took["core"]), peer_text, took[peer] / took["core"],
                1.5)], notes
