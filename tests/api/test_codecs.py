"""The server's .npy body parsing: a push's two arrays back to back, and refusals that name the
array at fault. (The codec under it is checked against numpy in tests/test_npy.py.)"""

from __future__ import annotations

import io

import numpy as np
import pytest

from service.api import codecs
from service.core.errors import InvalidRequest


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
