"""Request and reply bodies: JSON (orjson) and numpy's .npy / .npz, pickles always refused.

Binary replies are built with one gather straight into the reply buffer: the .npy header is
written first and the rows are taken into the bytes after it (service.npy.empty).
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any

import numpy as np
import orjson

from service import npy
from service.core.errors import InvalidRequest

NPY = "application/x-npy"
NPZ = "application/x-npz"
JSON = "application/json"


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
        name = unknown[0] if len(unknown[0]) <= 80 else unknown[0][:77] + "..."
        raise InvalidRequest(f"{name} is not a field of this request (fields: {sorted(allowed)})")


def _depth_and_bools(value: Any, field: str, max_depth: int) -> None:
    """Refuse booleans (numpy would read True as 1) and nesting deeper than max_depth (levels
    of lists: [[1]] is 2)."""
    stack = [(value, 1)]
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


def _nested_array(value: Any, field: str, max_depth: int, wanted: str) -> np.ndarray:
    """A JSON value as numpy reads it ([] and [[]] as int64: empty, not float), refusing what
    is missing, nested too deep, boolean or ragged."""
    if value is None:
        raise InvalidRequest(f"{field} is required")
    _depth_and_bools(value, field, max_depth)
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(f"{field} must be {wanted} of even shape (not ragged)") from None
    if array.size == 0 and array.dtype.kind == "f":  # [] or [[]]: numpy says float, we say empty
        return array.astype(np.int64)
    return array


def json_array(value: Any, field: str, kinds: str, max_depth: int) -> np.ndarray:
    """A JSON number or nested list of numbers as an array; `kinds` are the accepted dtype kinds
    ("iu" for ids, "iuf" for gradients)."""
    array = _nested_array(value, field, max_depth, "a number or a nested list of numbers")
    if array.dtype.kind not in kinds:
        wanted = "integers" if kinds == "iu" else "numbers"
        if array.dtype.kind == "O":
            raise InvalidRequest(f"{field} must be {wanted} that fit in 64 bits, of even shape")
        if kinds == "iu" and array.dtype.kind == "f":
            _refuse_wide_integers(array, field)
        sample = array.reshape(-1)[:1].tolist()
        raise InvalidRequest(
            f"{field} must be {wanted}, got {array.dtype.kind == 'U' and 'strings' or 'values'} "
            f"such as {sample[0] if sample else value!r}"
        )
    return array


KEY_LOW, KEY_END = -(2**63), 2**64  # JSON keys: [-2**63, 2**64)
KEY_BITS = 2**64 - 1


def json_keys(value: Any, field: str, max_depth: int) -> np.ndarray:
    """JSON ids of a table keyed by any 64-bit integer (a dynamic table), as int64 keys: integers
    in [-2**63, 2**64), those of 2**63 and above being the int64 of the same bits (the uint64
    keys). One list may mix negative and large ids, which numpy alone would turn into floats or
    objects: such a list is read exactly, integer by integer."""
    array = _nested_array(value, field, max_depth, "an integer or a nested list of integers")
    if array.dtype.kind == "i":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "u":  # non-negative, some >= 2**63: the same bits as int64
        return array.astype(np.uint64, copy=False).view(np.int64)
    items = np.array(value, dtype=object).reshape(-1)  # the values as JSON gave them
    if array.dtype.kind in "fO" and all(type(item) is int for item in items):
        low, high = min(items), max(items)
        if low >= KEY_LOW and high < KEY_END:
            return np.fromiter((item & KEY_BITS for item in items), dtype=np.uint64,
                               count=len(items)).view(np.int64).reshape(array.shape)
        raise InvalidRequest(f"{field} must be integers in [-2**63, 2**64), got "
                             f"{low if low < KEY_LOW else high}")
    # a JSON integer orjson could not hold in 64 bits arrives as a float of magnitude >= 2**63
    wide = [item for item in items if type(item) is float and math.isfinite(item)
            and abs(item) >= 2.0**63] if array.dtype.kind in "fO" else []
    if wide:
        raise InvalidRequest(f"{field} must be integers in [-2**63, 2**64), got one of about "
                             f"{wide[0]:.4g} (JSON integers beyond 64 bits are read as floats)")
    sample = next((item for item in items if type(item) is not int), items[0] if len(items)
                  else value)
    described = "strings" if isinstance(sample, str) else "values"
    raise InvalidRequest(f"{field} must be integers, got {described} such as {sample!r}")


def _refuse_wide_integers(array: np.ndarray, field: str) -> None:
    """orjson reads a JSON integer beyond 64 bits as a float: name it as the integer it was."""
    flat = array.reshape(-1)
    wide = (np.abs(flat) >= 2.0**63) & (np.floor(flat) == flat)  # (n,)
    if wide.any():
        raise InvalidRequest(
            f"{field} must be integers between -2**63 and 2**63 - 1, got one of about "
            f"{flat[np.argmax(wide)]:.4g} (JSON integers beyond 64 bits are read as floats)"
        )


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


# -- .npy / .npz --------------------------------------------------------------------------------
# The format itself (headers written and parsed, checked, cached) is service.npy's, shared with
# the client and the snapshots; here its refusals become the request's 422.
def parse_npy(body: bytes | memoryview, field: str = "body") -> np.ndarray:
    """An array from .npy bytes without copying the data (np.frombuffer); pickles refused."""
    try:
        return npy.read(body, field=field)[0]
    except npy.NpyError as error:
        raise InvalidRequest(str(error)) from None


def parse_npy_pair(body: bytes | memoryview, first: str, second: str) -> tuple[np.ndarray, ...]:
    """Two arrays sent as two .npy files back to back (what np.save twice into one file
    writes, and np.load twice reads), without copying: a push's ids.npy then grads.npy."""
    try:
        first_array, end = npy.read(body, field=first, last=False)
        if end == len(body):
            raise InvalidRequest(
                f"{second} is missing: the body holds one .npy array ({first}); send "
                f"{first}.npy and {second}.npy back to back"
            )
        return first_array, npy.read(body, end, field=second)[0]
    except npy.NpyError as error:
        raise InvalidRequest(str(error)) from None


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


to_npy = npy.encode  # an array as .npy bytes (np.save's)
npy_reply_buffer = npy.empty  # a lookup reply: the .npy header, then room for the rows


def to_npz(**arrays: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, allow_pickle=False, **arrays)
    return stream.getvalue()
