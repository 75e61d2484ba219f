"""A whole table's weights as one .npy over HTTP, streamed both ways.

Export (`npy_chunks`) sends the .npy header, then the rows in chunks, each copied under the
table lock (a row is never torn; rows of different chunks may be from different steps if
training runs during the download). Import (`NpyReceiver`) checks the header against the table
as soon as it has arrived and fills one new array of the table's shape as the body streams in:
memory is one table's weights, whatever the body's chunking.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from service import npy
from service.core.errors import InvalidRequest
from service.core.table import EmbeddingTable

EXPORT_CHUNK_BYTES = 16 * 2**20  # the lock is held for one chunk's copy (a few ms)
MAX_HEADER_BYTES = 65536


def npy_chunks(
    table: EmbeddingTable, chunk_bytes: int = EXPORT_CHUNK_BYTES
) -> tuple[int, Iterator[bytes]]:
    """(length of the .npy in bytes, an iterator over its pieces) of the table's weights."""
    num_embeddings, dim = table.weights.shape
    header = npy.header(table.dtype, (num_embeddings, dim))  # the export is np.save's file
    rows_per_chunk = max(1, chunk_bytes // (dim * table.dtype.itemsize))

    def pieces() -> Iterator[bytes]:
        yield header
        for start in range(0, num_embeddings, rows_per_chunk):
            stop = min(num_embeddings, start + rows_per_chunk)
            rows, _ = table.lookup(np.arange(start, stop))  # (stop - start, dim), under the lock
            yield rows.tobytes()

    return len(header) + num_embeddings * dim * table.dtype.itemsize, pieces()


def check_finite(weights: np.ndarray, chunk_rows: int = 1 << 16) -> None:
    """InvalidRequest naming the first row holding NaN or infinity (checked in chunks: no
    table-sized boolean temporary)."""
    if weights.dtype.kind != "f":
        return
    for start in range(0, len(weights), chunk_rows):
        finite = np.isfinite(weights[start : start + chunk_rows]).all(axis=1)  # (chunk,)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise InvalidRequest(f"body must hold finite weights, got NaN or infinity in row {row}")


class NpyReceiver:
    """Builds an array of `shape` and `dtype` from .npy bytes fed in pieces. InvalidRequest as
    soon as the header disagrees, or if the data ends early or runs long.

    >>> receiver = NpyReceiver((3, 2), np.dtype(np.float32), "table 'words'")
    >>> for piece in body_pieces: receiver.feed(piece)
    >>> weights = receiver.finish()
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, owner: str) -> None:
        self.shape = shape
        self.dtype = dtype
        self.owner = owner
        self.received = 0
        self._prefix = bytearray()
        self._array: np.ndarray | None = None
        self._data: memoryview | None = None  # the bytes of _array
        self._filled = 0

    def feed(self, piece: bytes) -> None:
        self.received += len(piece)
        if self._data is None:
            self._prefix += piece
            length = self._header_length()
            if length is None or len(self._prefix) < length:
                return
            self._check_header(bytes(self._prefix[:length]))
            self._array = np.empty(self.shape, dtype=self.dtype)
            self._data = self._array.data.cast("B")
            piece, self._prefix = bytes(self._prefix[length:]), bytearray()
        end = self._filled + len(piece)
        if end > len(self._data):
            raise InvalidRequest(
                f"body is longer than an .npy of {self._described()}: more than "
                f"{len(self._data)} bytes of data"
            )
        self._data[self._filled : end] = piece
        self._filled = end

    def finish(self) -> np.ndarray:
        if self._array is None or self._data is None:
            raise InvalidRequest(
                f"body is not a whole .npy array: it ended after {self.received} bytes, "
                "inside the header"
            )
        if self._filled != len(self._data):
            raise InvalidRequest(
                f"body is a truncated .npy: {self._described()} needs {len(self._data)} bytes "
                f"of data, got {self._filled}"
            )
        return self._array

    def _described(self) -> str:
        return f"shape {list(self.shape)} and dtype {self.dtype}"

    def _header_length(self) -> int | None:
        """Bytes of magic + header once enough have arrived to tell (a prefix numpy refuses
        before any header, at once); None before."""
        if len(self._prefix) < 12 and self._prefix == npy.MAGIC[: len(self._prefix)]:
            return None
        length = npy.header_end(self._prefix)
        if length > MAX_HEADER_BYTES:
            raise InvalidRequest(f"body has an .npy header of {length} bytes, more than "
                                 f"{MAX_HEADER_BYTES}")
        return length

    def _check_header(self, header: bytes) -> None:
        try:
            shape, fortran_order, dtype = npy.read_header(header, "body")
        except npy.NpyError as error:
            raise InvalidRequest(str(error)) from None
        if dtype != self.dtype or tuple(shape) != self.shape:
            raise InvalidRequest(
                f"body holds an array of shape {list(shape)} and dtype {dtype}; {self.owner} "
                f"needs {self._described()}"
            )
        if fortran_order:
            raise InvalidRequest("body is a Fortran-order .npy; send a C-order array "
                                 "(np.ascontiguousarray)")
