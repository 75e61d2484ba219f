"""bench/compare.py's rows and how they are shown: the printed table, the Markdown results
file, the PNG plot, and the machine they were measured on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of the table: ours against a peer, as a ratio, against a target (if any).

    `higher_is_better`: the ratio is ours / peer for rates; for latency and memory it is
    ours / peer too, and the target is an upper bound."""

    number: int
    label: str
    ours: str
    peer: str
    ratio: float | None  # None: the peer could not run
    target: float | None  # None: reported, no target
    higher_is_better: bool = True
    ratio_text: str = ""
    skipped: str = ""  # why the peer did not run

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "SKIP"
        if self.target is None:
            return "info"
        met = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "PASS" if met else "MISS"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.higher_is_better else '<='} {_ratio(self.target)}"

    def shown_ratio(self) -> str:
        return "-" if self.ratio is None else (self.ratio_text or _ratio(self.ratio))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _ratio(value: float) -> str:
    return f"{value:.0%}" if value < 1 else f"{value:.2f}x"


def render_table(rows: list[Row]) -> str:
    header = ("#", "measure", "ours", "peer", "ratio", "target", "")
    lines = [header] + [(str(r.number), r.label, r.ours, r.peer, r.shown_ratio(), r.target_text,
                         r.verdict) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
           for line in lines]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def render_markdown(
    rows: list[Row], notes: list[str], about: dict[str, str], setup: dict[str, Any]
) -> str:
    lines = ["| # | measure | ours | peer | ratio | target | |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.number} | {r.label} | {r.ours} | {r.peer} | {r.shown_ratio()} | "
              f"{r.target_text} | {r.verdict} |" for r in rows]
    lines += ["", "Setup: " + ", ".join(f"{key} {value}" for key, value in setup.items()), "",
              "Machine: " + "; ".join(f"{key}: {value}" for key, value in about.items())]
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def render_plot(rows: list[Row], path: Path, setup: dict[str, Any]) -> bool:
    """Each row's ratio (log scale) with its target; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [r for r in rows if r.ratio is not None]
    figure, axes = plt.subplots(figsize=(9, 4.2), dpi=90)
    colors = {"PASS": "#2a9d4b", "MISS": "#d1495b", "info": "#7d8597"}
    positions = list(range(len(shown)))[::-1]
    axes.barh(positions, [r.ratio or 0 for r in shown],
              color=[colors[r.verdict] for r in shown])
    for position, row in zip(positions, shown, strict=True):
        if row.target is not None:
            axes.plot([row.target] * 2, [position - 0.4, position + 0.4], color="black", lw=2)
        axes.text(row.ratio or 0, position, f" {row.shown_ratio()} {row.verdict}",
                  va="center", fontsize=8)
    axes.set_yticks(positions, [f"{r.number}. {r.label}" for r in shown], fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("ours / peer (black bar: target; rows 2 and 5: lower is better)")
    axes.set_title(f"embedding service vs peers, V={setup.get('rows')}, "
                   f"dim {setup.get('dim')} float32", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    about = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{memory / 2**30:.0f} GiB",
             "os": platform.platform(), "python": platform.python_version()}
    for package in ("numpy", "uvicorn", "fastapi", "torch", "redis", "hiredis"):
        try:
            about[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            about[package] = "not installed"
    if shutil.which("redis-server"):
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        about["redis-server"] = version.stdout.split()[2].removeprefix("v=")
    return about
