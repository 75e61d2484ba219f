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
        raise InvalidRequest(
            f"{unknown[0]} is not a field of this request (fields: {sorted(allowed)})"
        )


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
# Layouts of .npy headers already read and checked, by header bytes: numpy parses a header with
# ast.literal_eval (about 50 us), the same few headers every request in a training loop.
_LAYOUTS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype]] = {}
_LAYOUTS_KEPT = 256


def _header_end(body: bytes | memoryview, start: int) -> int:
    """Where the .npy header starting at `start` ends, from its version and length fields; for
    anything numpy would refuse before reading a header, start + 8 (the magic and version)."""
    if bytes(body[start : start + 6]) != NPY_MAGIC:
        return start + 8
    version = bytes(body[start + 6 : start + 8])
    if version == b"\x01\x00" and len(body) >= start + 10:
        return start + 10 + int.from_bytes(body[start + 8 : start + 10], "little")
    if version in (b"\x02\x00", b"\x03\x00") and len(body) >= start + 12:
        return start + 12 + int.from_bytes(body[start + 8 : start + 12], "little")
    return start + 12  # another version, or cut short: numpy says which from these bytes


def npy_layout(header: bytes, field: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy header, checked; InvalidRequest naming `field`."""
    known = _LAYOUTS.get(header)
    if known is not None:
        return known
    try:
        stream = io.BytesIO(header)
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
    if len(_LAYOUTS) >= _LAYOUTS_KEPT:
        _LAYOUTS.clear()
    _LAYOUTS[header] = (tuple(shape), bool(fortran_order), dtype)
    return _LAYOUTS[header]


def _npy_at(
    body: bytes | memoryview, start: int, field: str, last: bool
) -> tuple[np.ndarray, int]:
    """The .npy array starting at `start` of body (a view: np.frombuffer) and where it ends.
    `last`: it must end where the body ends."""
    end_of_header = _header_end(body, start)
    shape, fortran_order, dtype = npy_layout(bytes(body[start:end_of_header]), field)
    count = math.prod(shape)  # Python ints: a header's (2**32, 2**32) must not wrap to 0
    expected = end_of_header + count * dtype.itemsize
    if len(body) < expected or (last and len(body) != expected):
        raise InvalidRequest(
            f"{field} is a truncated or padded .npy: header says {list(shape)} {dtype} "
            f"({expected - start} bytes), body has {len(body) - start} bytes"
        )
    try:
        array = np.frombuffer(body, dtype=dtype, count=count, offset=end_of_header)
        if fortran_order:
            return array.reshape(shape[::-1]).T, expected
        return array.reshape(shape), expected
    except (ValueError, TypeError) as error:  # e.g. no array has shape (2**31, 2**33, 0)
        raise InvalidRequest(f"{field} has shape {list(shape)}: {error}") from None


def parse_npy(body: bytes | memoryview, field: str = "body") -> np.ndarray:
    """An array from .npy bytes without copying the data (np.frombuffer); pickles refused."""
    return _npy_at(body, 0, field, last=True)[0]


def parse_npy_pair(body: bytes | memoryview, first: str, second: str) -> tuple[np.ndarray, ...]:
    """Two arrays sent as two .npy files back to back (what np.save twice into one file
    writes, and np.load twice reads), without copying: a push's ids.npy then grads.npy."""
    first_array, end = _npy_at(body, 0, first, last=False)
    if end == len(body):
        raise InvalidRequest(
            f"{second} is missing: the body holds one .npy array ({first}); send {first}.npy "
            f"and {second}.npy back to back"
        )
    return first_array, _npy_at(body, end, second, last=True)[0]


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


_HEADERS: dict[tuple[str, tuple[int, ...]], bytes] = {}


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header, padded so the data starts on a 64-byte boundary."""
    key = (dtype.str, tuple(shape))
    header = _HEADERS.get(key)
    if header is None:
        text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                     "shape": tuple(shape)}).encode("latin1")
        padding = 64 - (len(NPY_MAGIC) + 4 + len(text) + 1) % 64
        text = text + b" " * padding + b"\n"
        header = NPY_MAGIC + b"\x01\x00" + len(text).to_bytes(2, "little") + text
        if len(_HEADERS) >= _LAYOUTS_KEPT:
            _HEADERS.clear()
        _HEADERS[key] = header
    return header


def npy_reply_buffer(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A buffer (uint8) holding an .npy header and room for the data, and the array view of
    that room: fill the view, send memoryview(buffer). The room is not zeroed first (every byte
    of it is about to be written): that would touch a large reply's memory twice."""
    header = npy_header(dtype, shape)
    count = math.prod(shape)
    buffer = np.empty(len(header) + count * dtype.itemsize, dtype=np.uint8)
    buffer[: len(header)] = np.frombuffer(header, dtype=np.uint8)
    view = buffer[len(header) :].view(dtype).reshape(shape)
    return buffer, view


def to_npy(array: np.ndarray) -> bytes:
    buffer, view = npy_reply_buffer(array.dtype, array.shape)
    view[...] = array
    return buffer.tobytes()


def to_npz(**arrays: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()
