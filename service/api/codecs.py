"""Request and reply bodies: JSON (orjson) and numpy's .npy / .npz, pickles always refused.

Binary replies are built with one gather straight into the reply buffer: the .npy header is
written first and the rows are taken into the bytes after it (`npy_reply_buffer`).
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any

import numpy as np
import orjson

from service.core.errors import InvalidRequest

NPY = "application/x-npy"
NPZ = "application/x-npz"
JSON = "application/json"
NPY_MAGIC = b"\x93NUMPY"


# -- JSON -------------------------------------------------------------------------------------
def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"body must be a JSON object, got {type(value).__name__}")
    return value


def reject_unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(f"{unknown[0]} is not a field of this request (fields: {sorted(allowed)})")


def _depth_and_bools(value: Any, field: str, max_depth: int) -> None:
    """Refuse booleans (numpy would read True as 1) and nesting deeper than max_depth."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidRequest(f"{field} is nested deeper than {max_depth} levels")
        if type(item) is list:
            if item and type(item[0]) is not list:
                if any(type(x) is bool for x in item):
                    raise InvalidRequest(f"{field} must not contain booleans, got true/false")
                if any(type(x) is list for x in item):
                    raise InvalidRequest(f"{field} is a ragged nested list")
            else:
                stack.extend((x, depth + 1) for x in item)
        elif type(item) is bool:
            raise InvalidRequest(f"{field} must not contain booleans, got {item!r}")


def json_array(value: Any, field: str, kinds: str, max_depth: int) -> np.ndarray:
    """A JSON number or nested list of numbers as an array; `kinds` are the accepted dtype kinds
    ("iu" for ids, "iuf" for gradients)."""
    if value is None:
        raise InvalidRequest(f"{field} is required")
    _depth_and_bools(value, field, max_depth)
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(f"{field} must be a number or a nested list of numbers of even "
                             "shape (not ragged)") from None
    if array.size == 0 and array.dtype.kind == "f":  # [] or [[]]: numpy says float, we say empty
        array = array.astype(np.int64)
    if array.dtype.kind not in kinds:
        wanted = "integers" if kinds == "iu" else "numbers"
        if array.dtype.kind == "O":
            raise InvalidRequest(f"{field} must be {wanted} that fit in 64 bits, of even shape")
        sample = array.reshape(-1)[:1].tolist()
        raise InvalidRequest(
            f"{field} must be {wanted}, got {array.dtype.kind == 'U' and 'strings' or 'values'} "
            f"such as {sample[0] if sample else value!r}"
        )
    return array


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


# -- .npy / .npz --------------------------------------------------------------------------------
def parse_npy(body: bytes | memoryview, field: str = "body") -> np.ndarray:
    """An array from .npy bytes without copying the data (np.frombuffer); pickles refused."""
    try:
        stream = io.BytesIO(body)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as error:  # numpy reads the header with ast and tokenize: any of their
        # errors (SyntaxError, tokenize.TokenError, ValueError...) means a bad header
        raise InvalidRequest(f"{field} is not a valid .npy array: {error}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidRequest(f"{field} has dtype {dtype}: object, pickled or structured arrays "
                             "are refused")
    if dtype.itemsize == 0:
        raise InvalidRequest(f"{field} has dtype {dtype}, whose items have no size")
    if any(type(size) is not int or size < 0 for size in shape):
        raise InvalidRequest(f"{field} has shape {list(shape)}: sizes must be integers >= 0")
    offset = stream.tell()
    count = math.prod(shape)  # Python ints: a header's (2**32, 2**32) must not wrap to 0
    expected = offset + count * dtype.itemsize
    if len(body) != expected:
        raise InvalidRequest(
            f"{field} is a truncated or padded .npy: header says {list(shape)} {dtype} "
            f"({expected} bytes), body has {len(body)} bytes"
        )
    try:
        array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        if fortran_order:
            return array.reshape(shape[::-1]).T
        return array.reshape(shape)
    except (ValueError, TypeError) as error:  # e.g. no array has shape (2**31, 2**33, 0)
        raise InvalidRequest(f"{field} has shape {list(shape)}: {error}") from None


def parse_npz(body: bytes, names: tuple[str, ...], max_bytes: int) -> dict[str, np.ndarray]:
    """The named arrays of an .npz (zip of .npy). Every member's uncompressed size counts toward
    max_bytes, read with a bound, so a zip bomb stops at the limit."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        members = {info.filename: info for info in archive.infolist()}
    except Exception as error:  # zipfile raises many kinds on hostile input; all mean "bad zip"
        raise InvalidRequest(f"body is not a valid .npz archive: {error}") from None
    arrays: dict[str, np.ndarray] = {}
    budget = max_bytes
    for name in names:
        info = members.get(f"{name}.npy")
        if info is None:
            held = sorted(members)
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise InvalidRequest(f"{name} is missing from the .npz (it holds {shown or 'nothing'})")
        try:
            with archive.open(info) as member:
                data = member.read(budget + 1)
        except Exception as error:  # corrupt deflate data (zlib.error), truncated streams
            # (EOFError), encrypted members (RuntimeError), unknown compression...
            raise InvalidRequest(f"{name}.npy in the .npz cannot be read: {error}") from None
        if len(data) > budget:
            raise InvalidRequest(f"{name}.npy in the .npz unpacks to more than {max_bytes} bytes")
        budget -= len(data)
        arrays[name] = parse_npy(data, field=name)
    return arrays


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header, padded so the data starts on a 64-byte boundary."""
    header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                   "shape": tuple(shape)}).encode("latin1")
    padding = 64 - (len(NPY_MAGIC) + 4 + len(header) + 1) % 64
    header = header + b" " * padding + b"\n"
    return NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header


def npy_reply_buffer(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[bytearray, np.ndarray]:
    """A buffer holding an .npy header and room for the data, and the array view of that room:
    fill the view, send the buffer."""
    header = npy_header(dtype, shape)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = bytearray(len(header) + count * dtype.itemsize)
    buffer[: len(header)] = header
    view = np.frombuffer(buffer, dtype=dtype, count=count, offset=len(header)).reshape(shape)
    return buffer, view


def to_npy(array: np.ndarray) -> bytes:
    buffer, view = npy_reply_buffer(array.dtype, array.shape)
    view[...] = array
    return bytes(buffer)


def to_npz(**arrays: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()
