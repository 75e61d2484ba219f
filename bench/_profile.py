"""py-spy on a server process while bench/load.py loads it: where the process's time goes.

`profiled(pid, path, seconds)` records the process (sampling; py-spy pauses the process for
each sample, so the stacks are consistent) into `path` in py-spy's raw format (one line per
distinct stack: frames joined by ";" and a sample count);
`summary(path)` reads it back as the share of samples each function is on the stack of
(inclusive) and at the top of (self), grouped by module where that says more.

    with profiled(service.pid, Path("lookup32.txt"), seconds=10):
        wrk(...)
    print(summary(Path("lookup32.txt")))
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RATE = 250  # samples a second: enough for shares of a few percent over 10 s
FRAME = re.compile(r"^(?P<function>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable (pip install py-spy), beside this interpreter or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def profiled(pid: int, path: Path, seconds: float) -> Iterator[None]:
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy not found: pip install py-spy")
    recorder = subprocess.Popen(
        [executable, "record", "--pid", str(pid), "--rate", str(RATE), "--duration",
         str(max(1, round(seconds))), "--format", "raw", "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        _, errors = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')}")


def where(frame: str) -> str:
    """'function (file:line)' as 'module.function' with the file cut to what names it."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/service/", "/bench/", "lib/python3.11/"):
        if marker in file:
            file = ("service/" if marker == "/service/" else "") + file.split(marker, 1)[1]
            break
    return f"{file.removesuffix('.py')}:{match['function']}"


def stacks(path: Path) -> list[tuple[list[str], int]]:
    found = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            found.append(([where(frame) for frame in frames.split(";") if frame], int(count)))
    return found


def summary(path: Path, top: int = 30) -> str:
    """The functions most often on the stack (inclusive) and at its top (self), as shares of
    all samples of the process's threads."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in stacks(path):
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "inclusive:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in inclusive.most_common(top)]
    lines += ["self:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in own.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 30))
