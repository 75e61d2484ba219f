"""What both examples (word2vec, recsys) share: the service to train against (the given URL, or
one of their own with --serve), the trainer processes' reports (each batch's loss, each epoch's
end, an error), the coordinator's collection of them with a progress bar, and stopping the
processes whatever happens."""

from __future__ import annotations

import queue
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from examples.word2vec.progress import progress_bar

WAIT_SECONDS = 600.0  # the longest anyone waits for the others at an epoch's end
T = TypeVar("T")


def against_service(serve: bool, url: str, run: Callable[[str], T]) -> T:
    """run(url) against the service at `url`, or with serve=True against one started for it
    (service.api.process: `python -m service.api` in a child process, a throwaway data
    directory; the server's side is imported only then: a trainer needs only the client)."""
    if not serve:
        return run(url)
    from service.api.process import ServiceProcess

    with ServiceProcess() as service:
        print(f"started the service on {service.url}", flush=True)
        return run(service.url)


def say_plot(saved: bool, path: Path, what: str) -> None:
    if saved:
        print(f"{what} saved to {path}", flush=True)
    else:
        print(f"no {what}: matplotlib is not installed (pip install -e '.[plot]')",
              file=sys.stderr, flush=True)


@contextmanager
def reporting(messages: Any, trainer: int) -> Iterator[None]:
    """A trainer process's body: an exception is sent to the coordinator, then raised."""
    try:
        yield
    except BaseException:
        messages.put(("error", trainer, traceback.format_exc()))
        raise


def end_epoch(messages: Any, trainer: int, epoch: int, epoch_done: Any) -> None:
    """Tell the coordinator this trainer finished `epoch`; wait for its evaluation."""
    messages.put(("epoch", trainer, epoch))
    epoch_done.wait(WAIT_SECONDS)


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
