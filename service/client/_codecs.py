"""The client's side of the wire formats: .npy, .npz and JSON, with numpy and orjson only.

.npy is service.npy's, the codec the server uses too (numpy only: nothing of the server is
imported). Hot paths avoid work that repeats every call: .npy headers are built once per
(dtype, shape) and parsed once per distinct header, and replies are read with np.frombuffer
(no copy; the arrays are read-only views of the reply body).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import orjson

from service import npy

NPY = "application/x-npy"
NPZ = "application/x-npz"
JSON = "application/json"


def encode_npy(array: np.ndarray) -> bytes:
    """.npy bytes of an array (np.save's): the cached header and the data, copied once."""
    return npy.encode(array)


def encode_npy_pair(first: np.ndarray, second: np.ndarray) -> bytes:
    """Two .npy files back to back (what np.save twice into one stream writes): a push's ids
    and grads, the data copied once, no zip and no CRC-32 to compute."""
    return npy.encode(first, second)


def decode_npy(body: bytes | memoryview) -> np.ndarray:
    """The array in .npy bytes, as a read-only view of them (np.frombuffer: no copy; a reply
    received in place is a read-only memoryview of its buffer).
    ValueError (service.npy.NpyError) if they are not an .npy array the service would send."""
    return npy.read(body, field="the reply")[0]


def encode_npz(**arrays: np.ndarray) -> bytes:
    """An uncompressed .npz (a zip of .npy members), as np.savez writes, without its overhead."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            archive.writestr(f"{name}.npy", encode_npy(array))
    return stream.getvalue()


def encode_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_json(body: bytes | memoryview) -> Any:
    return orjson.loads(body)


KEY_BITS = 2**64 - 1


def as_ids(ids: Any) -> np.ndarray:
    """ids as an array; a list of Python ints becomes int64 (uint64 if some are >= 2**63 and
    none negative), an empty list an empty int64 array. A list mixing negative ids and ids of
    2**63 or more (which numpy would make floats) becomes the int64 keys of the same 64 bits,
    as a dynamic table reads them. Anything else is sent as it is: the server checks it and
    names what is wrong."""
    array = np.asarray(ids)
    if array.size == 0 and array.dtype.kind == "f":
        return array.astype(np.int64)
    if array.dtype.kind in "fO" and not isinstance(ids, np.ndarray):
        items = np.asarray(ids, dtype=object).reshape(-1)
        if all(type(item) is int for item in items) and min(items) >= -(2**63) and \
                max(items) <= KEY_BITS:
            return np.fromiter((item & KEY_BITS for item in items), dtype=np.uint64,
                               count=len(items)).view(np.int64).reshape(array.shape)
    return array


def as_keys_if_wide(ids: np.ndarray) -> np.ndarray:
    """uint64 ids as the int64 keys of the same bits (JSON lists of label ids carry int64)."""
    return ids.view(np.int64) if ids.dtype == np.uint64 else ids


def decode_npz(body: bytes | memoryview, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an .npz reply (no pickles)."""
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {name: npy.read(archive.read(f"{name}.npy"), field=name)[0] for name in names}


def json_ready(array: np.ndarray) -> np.ndarray | list[Any] | int | float:
    """An array orjson can serialize natively (C-contiguous, a dtype it knows), else a list."""
    if array.ndim == 0:
        scalar: int | float = array.item()
        return scalar
    if array.dtype.kind in "iuf" and array.dtype.itemsize in (1, 2, 4, 8):
        if array.dtype == np.float16:
            return array.astype(np.float32)
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    nested: list[Any] = array.tolist()
    return nested
