"""python -m examples.recsys [--url URL | --serve]: BPR on a generated click log with hashed
64-bit ids, user and item tables dynamic in the service, two trainer processes.

The service's URL is --url, else the EMBED_URL environment variable, else
http://127.0.0.1:8000; --serve starts a service of its own on a free port instead
(service.api.process: `python -m service.api` in a child process, with a throwaway data
directory). A service that wants a bearer token gets EMBED_TOKEN.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path

from examples.recsys.plot import save_plot
from examples.recsys.train import History, RecsysConfig, train
from examples.trainers import against_service, say_plot

DEFAULT_URL = "http://127.0.0.1:8000"
HELP = {
    "users": "users in the log", "items": "items in the log",
    "topics": "planted topics: each user clicks mostly items of one",
    "clicks": "clicks in the log", "noise": "share of clicks on any topic",
    "dim": "embedding dimension", "batch_size": "clicks per push", "epochs": "passes over the log",
    "lr": "adagrad learning rate of both tables", "reg": "L2 regularization of the rows",
    "trainers": "trainer processes pushing at once",
    "seed": "seed of the log, the initial rows and the sampling", "k": "hit rate at k",
    "admit_after": "clicks before an item gets a row in the service (dynamic.admit_after)",
    "capacity": "rows each table keeps at most (dynamic.capacity)",
    "table_prefix": "the tables are PREFIX-users and PREFIX-items (replaced if they exist)",
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.recsys",
        description="BPR matrix factorization of a click log with hashed ids; user and item "
                    "tables dynamic in the service; several trainer processes.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default=os.environ.get("EMBED_URL", DEFAULT_URL),
                       help="the service (default: $EMBED_URL or %(default)s)")
    where.add_argument("--serve", action="store_true",
                       help="start a service of its own (on a free loopback port)")
    for spec in fields(RecsysConfig):
        parser.add_argument(f"--{spec.name.replace('_', '-')}", dest=spec.name,
                            type=type(spec.default), default=spec.default,
                            help=f"{HELP[spec.name]} ({spec.default})")
    parser.add_argument("--plot", type=Path, default=Path("recsys_hit_rate.png"),
                        help="where to save the plot, if matplotlib is installed")
    parser.add_argument("--no-plot", action="store_true", help="save no plot")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> History:
    args = parse(argv)
    config = RecsysConfig(**{spec.name: getattr(args, spec.name)
                             for spec in fields(RecsysConfig)})
    token = os.environ.get("EMBED_TOKEN") or None
    history = against_service(
        args.serve, args.url, lambda url: train(config, url, not args.no_progress, token))
    print(f"hit rate at {config.k}: {history.initial:.3f} -> {history.hit_rate[-1]:.3f} "
          f"(popularity {history.popularity:.3f}, chance {history.chance:.3f}); rows in the "
          + ", ".join(f"{name} table {rows}" for name, rows in history.rows.items()), flush=True)
    if not args.no_plot:
        say_plot(save_plot(history, args.plot, config.k), args.plot, "plot")
    return history


if __name__ == "__main__":
    main()
