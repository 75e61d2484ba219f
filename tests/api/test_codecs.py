"""The server's .npy reading against numpy's own reader: the same arrays, and for damaged bodies
the same refusal, whether the header was seen before (cached layout) or not."""

from __future__ import annotations

import io
import math
import random
import re

import numpy as np
import pytest

from service.api import codecs
from service.core.errors import InvalidRequest


def numpy_reads(body: bytes, field: str) -> np.ndarray:
    """The obviously right reader: numpy's header functions on the whole body, then the checks
    the service promises (no objects, no empty dtypes, sizes >= 0, exact length)."""
    try:
        stream = io.BytesIO(body)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as error:
        raise InvalidRequest(f"{field} is not a valid .npy array: {error}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidRequest(f"{field} has dtype {dtype}: object, pickled or structured arrays "
                             "are refused")
    if dtype.itemsize == 0:
        raise InvalidRequest(f"{field} has dtype {dtype}, whose items have no size")
    if any(type(size) is not int or size < 0 for size in shape):
        raise InvalidRequest(f"{field} has shape {list(shape)}: sizes must be integers >= 0")
    expected = stream.tell() + math.prod(shape) * dtype.itemsize
    if len(body) != expected:
        raise InvalidRequest(f"{field} is a truncated or padded .npy: header says {list(shape)} "
                             f"{dtype} ({expected} bytes), body has {len(body)} bytes")
    try:
        array = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=stream.tell())
        return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
    except (ValueError, TypeError) as error:
        raise InvalidRequest(f"{field} has shape {list(shape)}: {error}") from None


def outcome(reader: object, body: bytes) -> tuple[object, ...]:
    try:
        array = reader(body, "ids")  # type: ignore[operator]
        return ("array", array.dtype.str, array.shape, array.tobytes())
    except InvalidRequest as error:  # ast's messages name object addresses: not compared
        return ("refused", re.sub(r"0x[0-9a-f]+", "0x", error.detail))


def npy(array: np.ndarray, version: tuple[int, int]) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array(stream, array, version=version)
    return stream.getvalue()


ARRAYS = [np.arange(5), np.zeros((3, 4), np.float32), np.asfortranarray(np.ones((2, 3))),
          np.array(3), np.zeros((0, 8), np.float32)]


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_same_outcome_as_numpy_on_cut_and_damaged_bodies(version: tuple[int, int]) -> None:
    rng = random.Random(0)
    for array in ARRAYS:
        body = npy(array, version)
        bodies = [body, body + b"x"] + [body[:cut] for cut in range(min(len(body), 140))]
        for _ in range(150):
            damaged = bytearray(body)
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            bodies.append(bytes(damaged))
        for candidate in bodies:
            for cached in (False, True):  # the header's layout unknown, then remembered
                if not cached:
                    codecs._LAYOUTS.clear()
                assert outcome(codecs.parse_npy, candidate) == outcome(numpy_reads, candidate)


def test_pair_reads_two_arrays_without_copying() -> None:
    ids, grads = np.array([4, 1, 4]), np.arange(6, dtype=np.float32).reshape(3, 2)
    stream = io.BytesIO()
    np.save(stream, ids)
    np.save(stream, grads)
    body = stream.getvalue()
    got_ids, got_grads = codecs.parse_npy_pair(body, "ids", "grads")
    assert got_ids.tolist() == [4, 1, 4] and got_grads.tolist() == grads.tolist()
    assert got_grads.dtype == np.float32 and got_grads.base is not None  # a view of the body
    stream.seek(0)
    assert np.load(stream).tolist() == [4, 1, 4] and np.load(stream).tolist() == grads.tolist()


@pytest.mark.parametrize(("body", "detail"), [
    (codecs.to_npy(np.array([1])), "grads is missing: the body holds one .npy array (ids)"),
    (codecs.to_npy(np.array([1])) + b"\x93NUMPY", "grads is not a valid .npy array"),
    (codecs.to_npy(np.array([1]))[:-1], "ids is a truncated or padded .npy"),
    (codecs.to_npy(np.array([1])) + codecs.to_npy(np.ones((1, 2)))[:-2],
     "grads is a truncated or padded .npy: header says [1, 2] float64 (144 bytes), "
     "body has 142 bytes"),
    (codecs.to_npy(np.array([1])) + codecs.to_npy(np.ones((1, 2))) + b"\0",
     "grads is a truncated or padded .npy"),
])
def test_pair_refusals_name_the_array(body: bytes, detail: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        codecs.parse_npy_pair(body, "ids", "grads")
    assert refused.value.detail.startswith(detail)


@pytest.mark.parametrize("shape", [(3, 4), (0, 64), (2, 0, 5), ()])
def test_reply_buffer_is_a_valid_npy_of_the_gathered_rows(shape: tuple[int, ...]) -> None:
    rows = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    buffer, view = codecs.npy_reply_buffer(np.dtype(np.float32), shape)
    view[...] = rows
    assert buffer.dtype == np.uint8 and (len(buffer) - view.nbytes) % 64 == 0
    read = np.load(io.BytesIO(memoryview(buffer)))
    assert read.dtype == np.float32 and read.shape == shape and np.array_equal(read, rows)
