"""The one .npy codec (service/npy.py) against numpy's own reader and writer: the same arrays, and
for damaged bodies and files the same refusal, whether the header was seen before (cached
layout) or not; and every reader built on it (the server's body parser, the client's reply
decoder, the snapshot loader) refuses what the codec refuses, with the same sentence."""

from __future__ import annotations

import io
import math
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service import npy
from service.api import codecs as server_codecs
from service.client import _codecs as client_codecs
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
        raise npy.NpyError(f"{field} is not a valid .npy array: {error}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise npy.NpyError(f"{field} has dtype {dtype}: object, pickled or structured arrays "
                           "are refused")
    if dtype.itemsize == 0:
        raise npy.NpyError(f"{field} has dtype {dtype}, whose items have no size")
    if any(type(size) is not int or size < 0 for size in shape):
        raise npy.NpyError(f"{field} has shape {list(shape)}: sizes must be integers >= 0")
    expected = stream.tell() + math.prod(shape) * dtype.itemsize
    if len(body) != expected:
        raise npy.NpyError(f"{field} is a truncated or padded .npy: header says {list(shape)} "
                           f"{dtype} ({expected} bytes), body has {len(body)} bytes")
    try:
        array = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=stream.tell())
        return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
    except (ValueError, TypeError) as error:
        raise npy.NpyError(f"{field} has shape {list(shape)}: {error}") from None


# Every reader of .npy bodies, as (body) -> array, with the field its sentences name.
READERS: dict[str, tuple[Callable[[bytes], np.ndarray], str]] = {
    "codec": (lambda body: npy.read(body, field="ids")[0], "ids"),
    "server": (lambda body: server_codecs.parse_npy(body, "ids"), "ids"),
    "client": (client_codecs.decode_npy, "the reply"),
    "oracle": (lambda body: numpy_reads(body, "ids"), "ids"),
}


def outcome(reader: str, body: bytes) -> tuple[object, ...]:
    read, field = READERS[reader]
    try:
        array = read(body)
        return ("array", array.dtype.str, array.shape, array.tobytes())
    except (npy.NpyError, InvalidRequest) as error:  # ast's messages name object addresses
        sentence = error.detail if isinstance(error, InvalidRequest) else str(error)
        assert sentence.startswith(field + " ")
        return ("refused", re.sub(r"0x[0-9a-f]+", "0x", sentence[len(field):]))


def saved(array: np.ndarray, version: tuple[int, int]) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array(stream, array, version=version)
    return stream.getvalue()


ARRAYS = [np.arange(5), np.zeros((3, 4), np.float32), np.asfortranarray(np.ones((2, 3))),
          np.array(3), np.zeros((0, 8), np.float32)]


def cut_and_damaged(body: bytes, rng: random.Random) -> list[bytes]:
    bodies = [body, body + b"x"] + [body[:cut] for cut in range(min(len(body), 140))]
    for _ in range(150):
        damaged = bytearray(body)
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        bodies.append(bytes(damaged))
    return bodies


@pytest.mark.parametrize("reader", ["codec", "server", "client"])
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_same_outcome_as_numpy_on_cut_and_damaged_bodies(
    reader: str, version: tuple[int, int]
) -> None:
    rng = random.Random(0)
    refused = 0
    for array in ARRAYS:
        for candidate in cut_and_damaged(saved(array, version), rng):
            for cached in (False, True):  # the header's layout unknown, then remembered
                if not cached:
                    npy._layouts.clear()
                expected = outcome("oracle", candidate)
                assert outcome(reader, candidate) == expected
                refused += expected[0] == "refused"
    assert refused > 1000  # the damage reached the checks, not only the happy path


@pytest.mark.parametrize("array", ARRAYS + [np.arange(6, dtype=">i4"), np.zeros((2, 0, 5))],
                         ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_encode_is_np_save(array: np.ndarray) -> None:
    stream = io.BytesIO()
    np.save(stream, np.ascontiguousarray(array) if array.ndim else array, allow_pickle=False)
    assert npy.encode(array) == stream.getvalue()  # byte for byte, header and data
    assert len(npy.header(array.dtype, array.shape)) % 64 == 0  # data aligned as numpy aligns


def test_encode_many_is_np_save_twice() -> None:
    ids, grads = np.array([4, 1, 4]), np.arange(6, dtype=np.float32).reshape(3, 2)
    stream = io.BytesIO(npy.encode(ids, grads))
    assert np.load(stream).tolist() == [4, 1, 4] and np.load(stream).tolist() == grads.tolist()
    first, end = npy.read(stream.getvalue(), field="ids", last=False)
    second, _ = npy.read(stream.getvalue(), end, field="grads")
    assert first.tolist() == [4, 1, 4] and second.tolist() == grads.tolist()
    assert second.base is not None and not second.flags.writeable  # a view of the body


@pytest.mark.parametrize("shape", [(3, 4), (0, 64), (2, 0, 5), ()])
def test_empty_is_a_valid_npy_of_the_rows_written_into_it(shape: tuple[int, ...]) -> None:
    rows = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    buffer, view = npy.empty(np.dtype(np.float32), shape)
    view[...] = rows
    assert buffer.dtype == np.uint8 and (len(buffer) - view.nbytes) % 64 == 0
    read = np.load(io.BytesIO(memoryview(buffer)))
    assert read.dtype == np.float32 and read.shape == shape and np.array_equal(read, rows)


def test_header_cache_is_bounded() -> None:
    npy._headers.clear()
    for size in range(npy.CACHE_LIMIT + 10):
        npy.header(np.dtype(np.int64), (size,))
    assert len(npy._headers) <= npy.CACHE_LIMIT


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_load_reads_files_as_numpy_does_and_refuses_damage_as_read_does(
    tmp_path: Path, version: tuple[int, int]
) -> None:
    rng = random.Random(1)
    for array in ARRAYS:
        for candidate in cut_and_damaged(saved(array, version), rng)[:120]:
            path = tmp_path / "a.npy"
            path.write_bytes(candidate)
            try:
                expected: tuple[object, ...] = ("array", numpy_reads(candidate, "a.npy").tolist())
            except npy.NpyError:
                expected = ("refused",)
            try:
                with open(path, "rb") as file:
                    loaded = npy.load(file, field="a.npy")
                got: tuple[object, ...] = ("array", loaded.tolist())
                assert loaded.flags.c_contiguous and loaded.flags.writeable
            except npy.NpyError as error:
                assert str(error).startswith("a.npy ")
                got = ("refused",)
            assert got == expected
