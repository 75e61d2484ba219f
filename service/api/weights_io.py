"""A table's weights over HTTP, both ways, in the layout of its kind.

A fixed table's weights are one .npy of its (num_embeddings, dim) matrix, streamed both ways.
Export (`npy_chunks`) sends the .npy header, then the rows in chunks, each copied under the
table lock (a row is never torn; rows of different chunks may be from different steps if
training runs during the download). Import (`NpyReceiver`) checks the header against the table
as soon as it has arrived and fills one new array of the table's shape as the body streams in:
memory is one table's weights, whatever the body's chunking.

A dynamic table's weights are an .npz of `ids` (int64, ascending) and `weights` (their rows):
export copies every live row at one instant (DynamicTable.export_rows); import sets the rows of
the given ids (DynamicTable.set_rows), the others untouched. The routes call `export` and
`receive`, which pick the layout from the table (its ids are keys or row numbers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service import npy
from service.api import codecs
from service.api.codecs import JSON, NPY, NPZ
from service.api.errors import NotAcceptable
from service.core.errors import InvalidRequest
from service.core.table import EmbeddingTable
from service.core.table_base import Table

DESCRIBED = {NPY: "np.save's bytes", NPZ: "np.savez's bytes of arrays ids and weights"}

EXPORT_CHUNK_BYTES = 16 * 2**20  # the lock is held for one chunk's copy (a few ms)
MAX_HEADER_BYTES = 65536


def npy_chunks(
    table: EmbeddingTable, chunk_bytes: int = EXPORT_CHUNK_BYTES
) -> tuple[int, Iterator[bytes]]:
    """(length of the .npy in bytes, an iterator over its pieces) of the table's weights."""
    num_embeddings, dim = table.num_embeddings, table.embedding_dim
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


def media_type(table: Table) -> str:
    """The binary layout of the table's weights: .npy (a matrix) or .npz (ids and weights)."""
    return NPZ if table.ids_are_keys else NPY


async def export(table: Table, fmt: str, max_json_bytes: int) -> Response:
    """The reply of GET weights in `fmt` (the table's media type, or JSON)."""
    step = table.step
    if not table.ids_are_keys and fmt == NPY:
        length, pieces = npy_chunks(table)  # type: ignore[arg-type]  # a fixed table's kind
        return StreamingResponse(pieces, media_type=NPY, headers={
            "X-Table-Step": str(step), "Content-Length": str(length),
            "Content-Disposition": f'attachment; filename="{table.name}.npy"'})
    weights_bytes = _weights_bytes(table)  # before anything is copied
    if fmt == JSON and weights_bytes > max_json_bytes:
        raise NotAcceptable(
            f"table {table.name!r} has {weights_bytes} bytes of weights, more than "
            f"max_json_weights_bytes={max_json_bytes} for JSON; ask for Accept: "
            f"{media_type(table)}")
    ids, rows, step = await run_in_threadpool(_all_rows, table)
    if fmt == JSON:
        reply: dict[str, Any] = {"shape": list(rows.shape), "vectors": rows}
        if table.ids_are_keys:
            reply = {"ids": ids, **reply}
        return Response(codecs.dumps(reply), media_type=JSON, headers={"X-Table-Step": str(step)})
    body = await run_in_threadpool(lambda: codecs.to_npz(ids=ids, weights=rows))
    return Response(body, media_type=NPZ, headers={
        "X-Table-Step": str(step),
        "Content-Disposition": f'attachment; filename="{table.name}.npz"'})


def _weights_bytes(table: Table) -> int:
    rows = table.live_rows if table.ids_are_keys else (  # type: ignore[attr-defined]
        table.num_embeddings)  # type: ignore[attr-defined]
    return int(rows) * table.embedding_dim * table.dtype.itemsize


def _all_rows(table: Table) -> tuple[np.ndarray, np.ndarray, int]:
    if not table.ids_are_keys:  # a fixed table (in this process or sharded: service.cluster)
        count = table.num_embeddings  # type: ignore[attr-defined]
        rows, step = table.lookup(np.arange(count))
        return np.arange(count), rows, step
    return table.export_rows()  # type: ignore[attr-defined, no-any-return]


async def receive(table: Table, stream: AsyncIterator[bytes], max_bytes: int) -> int:
    """Read a PUT weights body (at most max_bytes) and set the table's weights; the pending
    rows dropped."""
    if not table.ids_are_keys:
        shape = (table.num_embeddings, table.embedding_dim)  # type: ignore[attr-defined]
        receiver = NpyReceiver(shape, table.dtype, f"table {table.name!r}")
        problem: InvalidRequest | None = None
        async for piece in stream:
            if problem is None:
                try:
                    receiver.feed(piece)
                except InvalidRequest as error:
                    problem = error  # read on to the end, so the client sees the reply
        if problem is not None:
            raise problem
        weights = receiver.finish()
        await run_in_threadpool(check_finite, weights)
        return await run_in_threadpool(table.replace_weights,  # type: ignore[attr-defined]
                                       weights)
    body = b"".join([piece async for piece in stream])  # bounded by max_weights_body_bytes
    arrays = await run_in_threadpool(codecs.parse_npz, body, ("ids", "weights"), max_bytes)
    ids, weights = arrays["ids"], arrays["weights"]
    if ids.ndim != 1:
        raise InvalidRequest(f"ids must be a 1-d array of integers, got shape {list(ids.shape)}")
    return await run_in_threadpool(table.set_rows, ids, weights)  # type: ignore[attr-defined]
