"""What both examples' coordinators do with their trainer processes: collect each epoch's batch
losses from the message queue, with a progress bar, until every trainer says it is done, and
stop the processes whatever happens."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from examples.word2vec.progress import progress_bar

WAIT_SECONDS = 600.0  # the longest anyone waits for the others at an epoch's end


def collect_epoch(total: int, description: str, trainers: int, messages: Any,
                  processes: list[Any], show_progress: bool) -> list[float]:
    """The batch losses of one epoch (`total` batches), until all `trainers` finished it.
    Trainers send ("batch", trainer, loss), ("epoch", trainer, epoch) or ("error", trainer,
    traceback)."""
    losses: list[float] = []
    finished: set[int] = set()
    with progress_bar(total, description, show_progress) as bar:
        while len(finished) < trainers:
            try:
                kind, trainer, value = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p.name for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"trainer process died: {', '.join(dead)}") from None
                continue
            if kind == "batch":
                losses.append(value)
                bar.update(1)
            elif kind == "epoch":
                finished.add(trainer)
            else:
                raise RuntimeError(f"trainer {trainer} failed:\n{value}")
    return losses


@contextmanager
def running(processes: list[Any], epoch_done: Any) -> Iterator[None]:
    """Start the processes; on the way out, wait for them, and stop any still running (a
    trainer still waiting at the barrier is released by aborting it)."""
    for process in processes:
        process.start()
    try:
        yield
        for process in processes:
            process.join(WAIT_SECONDS)
    finally:
        epoch_done.abort()
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
