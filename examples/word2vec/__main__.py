"""python -m examples.word2vec --trainers 2 [--url URL | --serve]: train and report.

    python -m examples.word2vec --corpus FILE [--eval-pairs FILE]

trains on a whitespace-tokenized text file instead of the planted topics, with the settings
TEXT_DEFAULTS holds unless given (chosen by the Spearman correlation they reach on real text:
docs/training.md, "Train on your own text"); `python -m examples.word2vec.texts DIR` writes
real text and WordSim-353 from gensim's wheel.

The service's URL is --url, else the EMBED_URL environment variable, else
http://127.0.0.1:8000; --serve starts a service of its own on a free port instead
(service.api.process: `python -m service.api` in a child process, as `make serve` runs it, with
a throwaway data directory). A service that wants a bearer token gets EMBED_TOKEN (the variable
the service itself reads).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path

from examples.trainers import against_service, say_plot
from examples.word2vec.plot import save_loss_plot
from examples.word2vec.train import History, Word2VecConfig, train

DEFAULT_URL = "http://127.0.0.1:8000"
HELP = {
    "num_topics": "planted topics in the vocabulary",
    "words_per_topic": "words in each topic",
    "num_sentences": "sentences in the generated corpus",
    "sentence_length": "words per sentence",
    "noise": "share of words drawn from any topic",
    "window": "context words on each side of the target",
    "dim": "embedding dimension",
    "negatives": "negative samples per example",
    "batch_size": "examples per push",
    "epochs": "passes over the corpus",
    "lr": "SGD learning rate of both tables (the gradient is of the batch's mean loss)",
    "trainers": "trainer processes pushing at once",
    "seed": "seed of the corpus, the initial weights and the sampling",
    "neighbours": "k of the purity measure (k nearest neighbours by cosine)",
    "eval_examples": "examples in the held-out loss sample",
    "table_prefix": "the tables are PREFIX-in and PREFIX-out (replaced if they exist)",
    "update": "context rows' update: mean (the exact gradient of the context mean, as the "
              "book's CBOW) or word2vec (each context row gets the whole hidden gradient)",
    "corpus_path": "a whitespace-tokenized text file, one sentence or document a line, to train "
                   "on instead of the planted topics",
    "eval_pairs": "with --corpus: a tab-separated word, word, human score file (WordSim-353's "
                  "layout); the Spearman correlation with cosine similarity is reported",
    "min_count": "with --corpus: words seen fewer times are left out of the vocabulary",
    "subsample": "with --corpus: word2vec's subsampling threshold for frequent words (0: off)",
}
# With --corpus, these replace the planted-topic defaults unless given on the command line:
# chosen by the Spearman correlation with WordSim-353 they reach on real text (docs/training.md).
TEXT_DEFAULTS = {"dim": 100, "window": 4, "lr": 20.0, "batch_size": 256, "epochs": 12,
                 "update": "mean", "eval_examples": 4096}
FLAGS = {"corpus_path": "--corpus", "eval_pairs": "--eval-pairs"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.word2vec",
        description="Train word2vec CBOW with negative sampling, tables in the service, "
                    "several trainer processes pushing asynchronously.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default=os.environ.get("EMBED_URL", DEFAULT_URL),
                       help="the service (default: $EMBED_URL or %(default)s)")
    where.add_argument("--serve", action="store_true",
                       help="start a service of its own (on a free loopback port)")
    for spec in fields(Word2VecConfig):
        flag = FLAGS.get(spec.name, f"--{spec.name.replace('_', '-')}")
        text_default = TEXT_DEFAULTS.get(spec.name)
        shown = f" ({spec.default}; with --corpus {text_default})" if text_default else (
            f" ({spec.default})" if spec.default != "" else "")
        parser.add_argument(flag, dest=spec.name, type=type(spec.default), default=None,
                            help=HELP[spec.name] + shown)
    parser.add_argument("--plot", type=Path, default=Path("word2vec_loss.png"),
                        help="where to save the loss plot, if matplotlib is installed")
    parser.add_argument("--no-plot", action="store_true", help="save no plot")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    for spec in fields(Word2VecConfig):  # unset: the text default with --corpus, else the field's
        if getattr(args, spec.name) is None:
            text = args.corpus_path and spec.name in TEXT_DEFAULTS
            setattr(args, spec.name, TEXT_DEFAULTS[spec.name] if text else spec.default)
    if args.eval_pairs and not args.corpus_path:
        parser.error("--eval-pairs needs --corpus")
    return args


def main(argv: list[str] | None = None) -> History:
    args = parse(argv)
    config = Word2VecConfig(**{spec.name: getattr(args, spec.name)
                               for spec in fields(Word2VecConfig)})
    token = os.environ.get("EMBED_TOKEN") or None
    history = against_service(
        args.serve, args.url, lambda url: train(config, url, not args.no_progress, token))
    drop = 1 - history.eval_loss[-1] / history.initial_loss
    print(f"held-out loss {history.initial_loss:.4f} -> {history.eval_loss[-1]:.4f} "
          f"({drop:.0%} lower); {history.quality} {history.initial_purity:.3f} -> "
          f"{history.purity[-1]:.3f} (chance {history.chance_purity:.3f})"
          + (f" on {history.pairs_used} word pairs" if history.pairs_used else ""), flush=True)
    if not args.no_plot:
        say_plot(save_loss_plot(history, args.plot), args.plot, "loss plot")
    return history


if __name__ == "__main__":
    main()
