"""The file-level pieces every snapshot layout shares: .npy files streamed straight from an
array's buffer, fsync of files and directories, and the checks a reader makes of what it finds
(sizes recorded in meta.json, shapes and dtypes, counts), each failure a SnapshotDamaged naming
the file. Layouts: service.core.snapshots (fixed tables), service.core.dynamic.snapshots."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from service import npy
from service.core.errors import EmbeddingServiceError, SnapshotDamaged

if TYPE_CHECKING:
    from service.core.table_base import Table

META = "meta.json"
LABELS = "labels.json"
CHUNK_BYTES = 64 * 2**20  # one write call; also the bound on a batch of rewritten rows


@dataclass(frozen=True)
class WrittenTable:
    """What write_table wrote: the table as of `step` (and its change count `changes`)."""

    name: str
    step: int
    changes: int
    bytes: int
    seconds: float


def state_file(state_name: str) -> str:
    return f"state.{state_name}.npy"


def stream_npy(
    path: Path, array: np.ndarray, chunk_bytes: int, after_chunk: Callable[[int], None] | None
) -> int:
    """Write `array` as .npy straight from its buffer, chunk by chunk, without the table lock.
    Returns the header length (where the data starts)."""
    header = npy.header(array.dtype, array.shape)  # np.save's
    with open(path, "xb", buffering=0) as file:
        write_all(file, memoryview(header))
        row_bytes = max(1, array[0].nbytes if len(array) else 1)
        rows_per_chunk = max(1, chunk_bytes // row_bytes)
        for start in range(0, len(array), rows_per_chunk):
            chunk = np.ascontiguousarray(array[start : start + rows_per_chunk])  # a view if C-order
            write_all(file, chunk.data.cast("B"))
            if after_chunk is not None:
                after_chunk(chunk.nbytes)
    return len(header)


def write_all(file: BinaryIO, view: memoryview) -> None:
    while view:  # an unbuffered write may take part of it
        view = view[file.write(view) :]


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk. Filesystems that cannot
    fsync a directory (EINVAL: some network and bind mounts) only skip the directory's."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno != errno.EINVAL or not path.is_dir():
            raise
    finally:
        os.close(descriptor)


def finish(directory: Path, meta: dict[str, Any], name: str, step: int, changes: int,
           started: float) -> WrittenTable:
    """Write meta.json (with every other file's size), fsync every file and the directory."""
    files = {path.name: path.stat().st_size for path in sorted(directory.iterdir())}
    meta = {**meta, "files": files,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")
    for file_name in [*files, META]:
        fsync_path(directory / file_name)
    fsync_path(directory)
    total = sum(files.values()) + (directory / META).stat().st_size
    return WrittenTable(name, step, changes, total, time.perf_counter() - started)


# -- reading ---------------------------------------------------------------------------------------
def read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SnapshotDamaged(str(meta_path), f"cannot be read as JSON ({error})") from None
    if not isinstance(meta, dict):
        raise SnapshotDamaged(str(meta_path), "is not a JSON object")
    return meta


def meta_count(meta: dict[str, Any], field: str, minimum: int) -> int:
    value = meta[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return value


def damaged_meta(meta_path: Path, error: Exception) -> SnapshotDamaged:
    """The SnapshotDamaged of a meta.json that lacks or mistypes a field."""
    detail = getattr(error, "detail", None) or (
        f"lacks {error}" if isinstance(error, KeyError) else str(error))
    return SnapshotDamaged(str(meta_path), detail)


def check_size(path: Path, recorded: Any) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise SnapshotDamaged(str(path), f"is missing ({error.strerror})") from None
    if size != recorded:
        raise SnapshotDamaged(
            str(path), f"is {size} bytes but meta.json recorded {recorded} (truncated or altered)"
        )


def load_array(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    try:
        with open(path, "rb") as file:
            array = npy.load(file, field=path.name)
    except (OSError, npy.NpyError) as error:
        raise SnapshotDamaged(str(path), f"is not a readable .npy ({error})") from None
    if array.shape != shape or array.dtype != dtype:
        raise SnapshotDamaged(
            str(path), f"holds {list(array.shape)} {array.dtype}, meta.json says "
            f"{list(shape)} {dtype}"
        )
    return array


def read_labels(
    directory: Path, files: dict[str, Any], table: Table,
    label_check: Callable[[np.ndarray], None] | None = None,
) -> None:
    """Load labels.json into the table's labels, if the snapshot has one; its ids are checked
    by `label_check` (default: the table's own check_ids)."""
    if LABELS not in files:
        return
    check_size(directory / LABELS, files[LABELS])
    try:
        table.labels.load_json((directory / LABELS).read_bytes(),
                               label_check or table.check_ids)
    except EmbeddingServiceError as error:
        raise SnapshotDamaged(str(directory / LABELS), error.detail) from None
