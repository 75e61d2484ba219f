"""The .npy format in one place, for the server and the client: numpy's own rules, checked.

Every .npy the service reads or writes goes through here: request and reply bodies (lookups,
pushes as two .npy files back to back, weight export and import) on both sides of the wire, and
snapshot files on disk. It depends on numpy only, so the server's layers and the client (which
must not import the server) can share it.

    >>> body = encode(np.arange(3))                  # np.save's bytes
    >>> array, end = read(body, field="ids")         # a read-only view of body, no copy
    >>> array.tolist(), end == len(body)
    ([0, 1, 2], True)

Headers are written by numpy (numpy.lib.format.write_array_header_1_0: byte for byte what
np.save writes) and parsed by numpy (read_magic, read_array_header_*), then checked against what
the service accepts: no object, structured or subarray dtypes (pickles stay refused), no
zero-size items, sizes that are integers >= 0, and a body exactly as long as its header says.
Both directions are cached by layout: numpy parses a header with ast.literal_eval, and a
training loop sends the same few headers every request, so each distinct header is parsed once
and each (dtype, shape) written once.

A refusal is an NpyError (a ValueError) whose message names the array (`field`) and what is
wrong with it; the server turns it into a 422, the client raises it as it is.
"""

from __future__ import annotations

import io
import math
from typing import NamedTuple, TypeVar

import numpy as np

MAGIC = b"\x93NUMPY"
CACHE_LIMIT = 256  # distinct layouts remembered each way; a training loop uses a handful


class NpyError(ValueError):
    """Bytes that are not an .npy array the service accepts; the message names the array."""


class Layout(NamedTuple):
    """What a checked .npy header says: the array's shape, order and dtype."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no wrap-around


_headers: dict[tuple[str, tuple[int, ...]], bytes] = {}
_layouts: dict[bytes, Layout] = {}
Key = TypeVar("Key")
Value = TypeVar("Value")


def _remember(cache: dict[Key, Value], key: Key, value: Value) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value


# -- writing -----------------------------------------------------------------------------------
def header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The version 1.0 header of a C-ordered array: np.save's, data aligned to 64 bytes."""
    key = (dtype.str, tuple(shape))
    found = _headers.get(key)
    if found is None:
        stream = io.BytesIO()
        np.lib.format.write_array_header_1_0(stream, {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": tuple(shape),
        })
        found = stream.getvalue()
        _remember(_headers, key, found)
    return found


def encode(*arrays: np.ndarray) -> bytes:
    """.npy bytes of each array, back to back (one array: an .npy file; two: what np.save twice
    into one stream writes, a push's ids and grads). The data is copied once, into the result."""
    parts: list[bytes | memoryview] = []
    for array in arrays:
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)  # (not for 0-d arrays: it would make them 1-d)
        parts += [header(array.dtype, array.shape), array.data]
    return b"".join(parts)


def empty(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A buffer (uint8) holding an .npy header and room for the data, and the array view of
    that room: fill the view, send memoryview(buffer). The room is not zeroed first (every byte
    of it is about to be written): that would touch a large reply's memory twice."""
    head = header(dtype, shape)
    buffer = np.empty(len(head) + math.prod(shape) * dtype.itemsize, dtype=np.uint8)
    buffer.data[: len(head)] = head
    view = buffer[len(head) :].view(dtype).reshape(shape)
    return buffer, view


# -- reading -----------------------------------------------------------------------------------
def header_end(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Where the header of the .npy starting at `start` ends (where its data begins), from its
    version and length fields. For anything numpy would refuse before reading a header (another
    magic string, an unknown version, too few bytes), the end of the bytes numpy needs to say
    so: read_header then refuses them with numpy's own words."""
    if bytes(data[start : start + 6]) != MAGIC:
        return start + 8
    version = bytes(data[start + 6 : start + 8])
    if version == b"\x01\x00" and len(data) >= start + 10:
        return start + 10 + int.from_bytes(data[start + 8 : start + 10], "little")
    if version in (b"\x02\x00", b"\x03\x00") and len(data) >= start + 12:
        return start + 12 + int.from_bytes(data[start + 8 : start + 12], "little")
    return start + 12


def read_header(header_bytes: bytes, field: str = "the array") -> Layout:
    """The checked layout of an .npy header (magic, version, length and text), cached."""
    known = _layouts.get(header_bytes)
    if known is not None:
        return known
    try:
        stream = io.BytesIO(header_bytes)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as error:  # numpy reads the header with ast and tokenize: any of their
        # errors (SyntaxError, tokenize.TokenError, ValueError...) means a bad header
        raise NpyError(f"{field} is not a valid .npy array: {error}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise NpyError(f"{field} has dtype {dtype}: object, pickled or structured arrays are "
                       "refused")
    if dtype.itemsize == 0:
        raise NpyError(f"{field} has dtype {dtype}, whose items have no size")
    if any(type(size) is not int or size < 0 for size in shape):
        raise NpyError(f"{field} has shape {list(shape)}: sizes must be integers >= 0")
    layout = Layout(tuple(shape), bool(fortran_order), dtype)
    _remember(_layouts, header_bytes, layout)
    return layout


def read(
    body: bytes | bytearray | memoryview, start: int = 0, *, field: str = "the array",
    last: bool = True,
) -> tuple[np.ndarray, int]:
    """The array of the .npy starting at `start` of body, as a view of body (np.frombuffer: no
    copy; read-only when body is bytes), and where it ends. `last`: it must end where the body
    ends; otherwise more may follow (another .npy)."""
    data_start = header_end(body, start)
    layout = read_header(bytes(body[start:data_start]), field)
    end = data_start + layout.nbytes
    if len(body) < end or (last and len(body) != end):
        raise NpyError(
            f"{field} is a truncated or padded .npy: header says {list(layout.shape)} "
            f"{layout.dtype} ({end - start} bytes), body has {len(body) - start} bytes"
        )
    return _view(body, data_start, layout, field), end


def _view(
    buffer: bytes | bytearray | memoryview, offset: int, layout: Layout, field: str
) -> np.ndarray:
    shape = layout.shape
    try:
        array = np.frombuffer(buffer, dtype=layout.dtype, count=math.prod(shape), offset=offset)
        if len(shape) == 1:  # already its shape
            return array
        return array.reshape(shape[::-1]).T if layout.fortran_order else array.reshape(shape)
    except (ValueError, TypeError) as error:  # e.g. no array has shape (2**31, 2**33, 0)
        raise NpyError(f"{field} has shape {list(shape)}: {error}") from None


def load(file: io.BufferedIOBase, field: str = "the array") -> np.ndarray:
    """The array of an .npy file, read into memory of its own (writable, C order), checked as a
    body is: the header, and a file exactly as long as the header says."""
    prefix = file.read(12)
    end = header_end(prefix)
    head = prefix[:end] if end <= len(prefix) else prefix + file.read(end - len(prefix))
    layout = read_header(head, field)
    stored = np.empty(layout.shape[::-1] if layout.fortran_order else layout.shape, layout.dtype)
    room = stored.reshape(-1).view(np.uint8).data  # its bytes
    got = 0
    while got < len(room) and (count := file.readinto(room[got:])):
        got += count
    if got != layout.nbytes or file.read(1):
        has = f"{len(head) + got} bytes" if got != layout.nbytes else "more bytes"
        raise NpyError(
            f"{field} is a truncated or padded .npy: header says {list(layout.shape)} "
            f"{layout.dtype} ({len(head) + layout.nbytes} bytes), file has {has}"
        )
    return np.ascontiguousarray(stored.T) if layout.fortran_order else stored
