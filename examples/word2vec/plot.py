"""The loss plot (PNG), when matplotlib is installed (the `plot` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from examples.word2vec.train import History


def save_loss_plot(history: History, path: Path) -> bool:
    """Batch losses, epoch means and held-out loss on the left, purity (or Spearman) on the
    right. Returns False (and writes nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = np.arange(0, len(history.train_loss) + 1)  # 0: before training
    figure, (loss_axes, purity_axes) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    batches = np.asarray(history.batch_loss)
    batch_epoch = np.linspace(0, len(history.train_loss), len(batches), endpoint=False)
    loss_axes.plot(batch_epoch, batches, color="0.8", linewidth=0.6, label="batch loss")
    loss_axes.plot(epochs[1:] - 0.5, history.train_loss, "o-", label="train loss (epoch mean)")
    loss_axes.plot(epochs, [history.initial_loss, *history.eval_loss], "s-",
                   label="held-out loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("CBOW + negative sampling loss")
    loss_axes.legend(fontsize="small")
    purity_axes.plot(epochs, [history.initial_purity, *history.purity], "o-")
    purity_axes.axhline(history.chance_purity, color="0.5", linestyle="--", label="chance")
    purity_axes.set_ylim(min(0.0, *history.purity, history.initial_purity), 1.05)
    purity_axes.set_xlabel("epoch")
    purity_axes.set_ylabel(history.quality)
    purity_axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
