"""The client's .npy / .npz / JSON codecs against numpy's own (np.save, np.load)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from service.client import _codecs as codecs

ARRAYS = [
    np.arange(12, dtype=np.int64).reshape(3, 4),
    np.arange(5, dtype=np.int32),
    np.array(7, dtype=np.uint16),  # 0-d
    np.zeros((0, 4), dtype=np.float32),
    np.linspace(-1, 1, 24, dtype=np.float64).reshape(2, 3, 4),
    np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
    np.arange(6, dtype=">i4"),  # big-endian
]


def saved(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    stream = io.BytesIO()
    if version is None:
        np.save(stream, array, allow_pickle=False)
    else:
        np.lib.format.write_array(stream, array, version=version, allow_pickle=False)
    return stream.getvalue()


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_encode_npy_is_read_by_numpy(array: np.ndarray) -> None:
    encoded = codecs.encode_npy(array)
    loaded = np.load(io.BytesIO(encoded), allow_pickle=False)
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    assert np.array_equal(loaded, array)
    header_length = 10 + int.from_bytes(encoded[8:10], "little")
    assert header_length % 64 == 0  # data aligned as numpy aligns it


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
def test_decode_npy_reads_numpy(array: np.ndarray, version: tuple[int, int] | None) -> None:
    decoded = codecs.decode_npy(saved(np.asfortranarray(array) if array.ndim > 1 else array,
                                      version))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert np.array_equal(decoded, array)
    assert not decoded.flags.writeable  # a view of the reply, no copy


def test_decode_npy_refuses_what_is_not_an_array() -> None:
    with pytest.raises(ValueError, match="the reply is not a valid .npy array"):
        codecs.decode_npy(b'{"detail": "x"}')
    with pytest.raises(ValueError, match="header says"):
        codecs.decode_npy(saved(np.arange(4))[:-1])
    stream = io.BytesIO()
    np.save(stream, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object, pickled or structured arrays are refused"):
        codecs.decode_npy(stream.getvalue())


def test_encode_npz_is_read_by_numpy() -> None:
    ids, grads = np.array([1, 2, 2]), np.ones((3, 4), dtype=np.float32)
    encoded = codecs.encode_npz(ids=ids, grads=grads)
    with np.load(io.BytesIO(encoded), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["grads", "ids"]
        assert np.array_equal(archive["ids"], ids) and np.array_equal(archive["grads"], grads)
    assert all(info.compress_type == zipfile.ZIP_STORED
               for info in zipfile.ZipFile(io.BytesIO(encoded)).infolist())


@pytest.mark.parametrize(("ids", "grads"), [
    (np.array([1, 2, 2]), np.ones((3, 4), dtype=np.float32)),
    (np.array(7), np.arange(3.0)),  # a 0-d id and its row
    (np.arange(6).reshape(2, 3)[:, ::2], np.zeros((2, 2, 5), np.float16)),  # not contiguous
    (np.zeros(0, np.int64), np.zeros((0, 8), np.float32)),
])
def test_encode_npy_pair_is_read_by_numpy_twice(ids: np.ndarray, grads: np.ndarray) -> None:
    stream = io.BytesIO(codecs.encode_npy_pair(ids, grads))
    first, second = np.load(stream), np.load(stream)
    assert stream.read() == b""
    assert (first.dtype, first.shape, first.tolist()) == (ids.dtype, ids.shape, ids.tolist())
    assert (second.dtype, second.shape, second.tolist()) == (grads.dtype, grads.shape,
                                                             grads.tolist())


def test_as_ids() -> None:
    assert codecs.as_ids([]).dtype == np.int64
    assert codecs.as_ids([1, 2]).dtype == np.int64
    assert codecs.as_ids(np.array([1], dtype=np.int16)).dtype == np.int16
    assert codecs.as_ids([1.5]).dtype == np.float64  # sent as is: the server names the problem


def test_json_ready() -> None:
    assert codecs.encode_json({"ids": codecs.json_ready(np.array([[1, 2], [3, 4]]))}) == (
        b'{"ids":[[1,2],[3,4]]}')
    assert codecs.encode_json(codecs.json_ready(np.arange(4).reshape(2, 2).T)) == b"[[0,2],[1,3]]"
    assert codecs.encode_json(codecs.json_ready(np.array(3))) == b"3"
    assert codecs.encode_json(codecs.json_ready(np.array([0.5], dtype=np.float16))) == b"[0.5]"
    assert codecs.encode_json(codecs.json_ready(np.array([True]))) == b"[true]"
