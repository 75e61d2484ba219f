"""The training plot (PNG), when matplotlib is installed (the `plot` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from examples.recsys.train import History


def save_plot(history: History, path: Path, k: int) -> bool:
    """Batch and epoch losses on the left; the hit rate per epoch against the popularity
    baseline and chance on the right. False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = np.arange(0, len(history.hit_rate) + 1)
    figure, (loss_axes, rate_axes) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    batches = np.asarray(history.batch_loss)
    loss_axes.plot(np.linspace(0, len(history.train_loss), len(batches), endpoint=False),
                   batches, color="0.8", linewidth=0.6, label="batch loss")
    loss_axes.plot(epochs[1:] - 0.5, history.train_loss, "o-", label="epoch mean")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("BPR loss")
    loss_axes.legend(fontsize="small")
    rate_axes.plot(epochs, [history.initial, *history.hit_rate], "o-", label="model")
    rate_axes.axhline(history.popularity, color="C1", linestyle="--", label="popularity")
    rate_axes.axhline(history.chance, color="0.5", linestyle=":", label="chance")
    rate_axes.set_ylim(0, max(0.05, *history.hit_rate, history.popularity) * 1.15)
    rate_axes.set_xlabel("epoch")
    rate_axes.set_ylabel(f"held-out hit rate at {k}")
    rate_axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
