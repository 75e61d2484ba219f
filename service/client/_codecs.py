"""The client's side of the wire formats: .npy, .npz and JSON, with numpy and orjson only.

The service's own codecs (service.api.codecs) are not imported: the client must not need the
server's dependencies. Hot paths avoid work that repeats every call: .npy headers are built
once per (dtype, shape) and parsed once per distinct header, and replies are read with
np.frombuffer (no copy; the arrays are read-only views of the reply body).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import orjson

NPY = "application/x-npy"
NPZ = "application/x-npz"
JSON = "application/json"
NPY_MAGIC = b"\x93NUMPY"
_CACHE_LIMIT = 256  # distinct shapes remembered; a training loop uses a handful

_headers_by_shape: dict[tuple[str, tuple[int, ...]], bytes] = {}
_layouts_by_header: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for a C-ordered array, padded to 64 bytes as numpy does."""
    cache_key = (dtype.str, shape)
    header = _headers_by_shape.get(cache_key)
    if header is None:
        text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                     "shape": shape}).encode("latin1")
        padding = 64 - (len(NPY_MAGIC) + 4 + len(text) + 1) % 64
        text = text + b" " * padding + b"\n"
        header = NPY_MAGIC + b"\x01\x00" + len(text).to_bytes(2, "little") + text
        _remember(_headers_by_shape, cache_key, header)
    return header


def encode_npy(array: np.ndarray) -> bytes:
    """.npy bytes of an array: the cached header and the data, copied once."""
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # (not for 0-d arrays: it would make them 1-d)
    return b"".join((npy_header(array.dtype, array.shape), array.data))


def encode_npy_pair(first: np.ndarray, second: np.ndarray) -> bytes:
    """Two .npy files back to back (what np.save twice into one stream writes): a push's ids
    and grads, the data copied once, no zip and no CRC-32 to compute (0.5 ms a MiB here)."""
    parts: list[bytes | memoryview] = []
    for array in (first, second):
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        parts += [npy_header(array.dtype, array.shape), array.data]
    return b"".join(parts)


def _parse_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    layout = _layouts_by_header.get(header)
    if layout is None:
        stream = io.BytesIO(header)
        major, _ = np.lib.format.read_magic(stream)
        if major == 1:
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        if dtype.hasobject:
            raise ValueError(f"the reply holds an object array ({dtype}); pickles are refused")
        layout = (dtype, tuple(shape), bool(fortran_order))
        _remember(_layouts_by_header, header, layout)
    return layout


def decode_npy(body: bytes) -> np.ndarray:
    """The array in .npy bytes, as a read-only view of them (np.frombuffer: no copy)."""
    if body[:6] != NPY_MAGIC:
        raise ValueError(f"the reply is not .npy (it starts with {body[:16]!r})")
    if body[6] == 1:
        end = 10 + int.from_bytes(body[8:10], "little")
    else:
        end = 12 + int.from_bytes(body[8:12], "little")
    dtype, shape, fortran_order = _parse_header(body[:end])
    count = 1
    for extent in shape:
        count *= extent
    if len(body) != end + count * dtype.itemsize:
        raise ValueError(f"the .npy reply has {len(body)} bytes; its header says {shape} {dtype}")
    array = np.frombuffer(body, dtype=dtype, count=count, offset=end)
    if fortran_order:
        return array.reshape(shape[::-1]).T
    return array.reshape(shape)


def encode_npz(**arrays: np.ndarray) -> bytes:
    """An uncompressed .npz (a zip of .npy members), as np.savez writes, without its overhead."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            archive.writestr(f"{name}.npy", encode_npy(array))
    return stream.getvalue()


def encode_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_json(body: bytes) -> Any:
    return orjson.loads(body)


def as_ids(ids: Any) -> np.ndarray:
    """ids as an array; a list of Python ints becomes int64, an empty list an empty int64 array.
    Anything else is sent as it is: the server checks it and names what is wrong."""
    array = np.asarray(ids)
    if array.size == 0 and array.dtype.kind == "f":
        return array.astype(np.int64)
    return array


def json_ready(array: np.ndarray) -> np.ndarray | list[Any] | int | float:
    """An array orjson can serialize natively (C-contiguous, a dtype it knows), else a list."""
    if array.ndim == 0:
        return array.item()  # type: ignore[no-any-return]
    if array.dtype.kind in "iuf" and array.dtype.itemsize in (1, 2, 4, 8):
        if array.dtype == np.float16:
            return array.astype(np.float32)
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return array.tolist()  # type: ignore[no-any-return]
