"""Bad input, table-driven, across every endpoint: each case gets its exact 4xx, a detail that
names the problem, and leaves every table exactly as it was (weights, optimizer state, pending
gradient, step: a checksum of all of them)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api import codecs
from service.api.errors import wire_codes
from service.api.main import create_app
from service.api.settings import Settings
from service.core.dynamic.table import DynamicTable
from service.core.registry import TableRegistry

NPY = {"Content-Type": codecs.NPY}
NPZ = {"Content-Type": codecs.NPZ}
JSON = {"Content-Type": "application/json"}
WORDS = "/v1/tables/words"  # float32, sgd, 10 x 4, a pending gradient on rows 1 and 2
TAGS = "/v1/tables/tags"  # float64, adam, 6 x 3, max_staleness=1, at step 3
USERS = "/v1/tables/users"  # dynamic, float32, momentum, dim 4, capacity 3, admit_after 2, lfu:
# rows, evictions, admission candidates, a pending gradient and labels


def npz(**arrays: Any) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()


def npz_deflated(**arrays: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.savez_compressed(stream, **arrays)
    return stream.getvalue()


def corrupt_deflate() -> bytes:
    body = bytearray(npz_deflated(ids=np.array([1]), grads=np.ones((1, 4))))
    start = body.find(b"ids.npy") + len("ids.npy")
    body[start + 4 : start + 24] = b"\xff" * 20
    return bytes(body)


def encrypted_flag() -> bytes:
    body = bytearray(npz(ids=np.array([1]), grads=np.ones((1, 4))))
    body[6] |= 1  # general purpose flag, bit 0: encrypted (local header)
    central = body.find(b"PK\x01\x02")
    body[central + 8] |= 1  # and in the central directory
    return bytes(body)


def small_bomb() -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ids.npy", codecs.to_npy(np.zeros(2**16, dtype=np.int64)))
        archive.writestr("grads.npy", codecs.to_npy(np.zeros((2**16, 4), dtype=np.float32)))
    return stream.getvalue()


def npy_with_header(descr: Any, shape: tuple[int, ...], data: bytes = b"") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def table(**extra: Any) -> dict[str, Any]:
    return {"name": "new", "num_embeddings": 10, "embedding_dim": 4, **extra}


def dynamic(**settings: Any) -> dict[str, Any]:
    """A dynamic table's creation body with these settings."""
    return {"name": "new", "embedding_dim": 4, "dynamic": settings}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    detail: str  # a substring the detail must contain
    request: dict[str, Any] = field(default_factory=dict)


CASES = [
    # -- create table ---------------------------------------------------------------------
    Case("create-missing-name", "POST", "/v1/tables", 422, "name is required",
         {"json": {"num_embeddings": 10, "embedding_dim": 4}}),
    Case("create-bad-name", "POST", "/v1/tables", 422, "name must be 1-64 letters",
         {"json": table(name="a/b c")}),
    Case("create-long-name", "POST", "/v1/tables", 422, "name must be 1-64 letters",
         {"json": table(name="n" * 65)}),
    Case("create-zero-rows", "POST", "/v1/tables", 422, "num_embeddings",
         {"json": table(num_embeddings=0)}),
    Case("create-negative-dim", "POST", "/v1/tables", 422, "embedding_dim",
         {"json": table(embedding_dim=-4)}),
    Case("create-fractional-rows", "POST", "/v1/tables", 422, "num_embeddings",
         {"json": table(num_embeddings=10.5)}),
    Case("create-rows-as-list", "POST", "/v1/tables", 422, "num_embeddings",
         {"json": table(num_embeddings=[10])}),
    Case("create-dtype", "POST", "/v1/tables", 422, "dtype", {"json": table(dtype="float16")}),
    Case("create-unknown-field", "POST", "/v1/tables", 422, "colour is not a field",
         {"json": table(colour="red")}),
    Case("create-init-kind", "POST", "/v1/tables", 422, "init",
         {"json": table(init={"kind": "gaussian"})}),
    Case("create-init-negative-std", "POST", "/v1/tables", 422, "std",
         {"json": table(init={"kind": "normal", "std": -1})}),
    Case("create-init-nan-std", "POST", "/v1/tables", 422, "std",
         {"content": b'{"name": "new", "num_embeddings": 10, "embedding_dim": 4, '
                     b'"init": {"kind": "normal", "std": NaN}}', "headers": JSON}),
    Case("create-uniform-reversed", "POST", "/v1/tables", 422, "init.low must be <= init.high",
         {"json": table(init={"kind": "uniform", "low": 1, "high": -1})}),
    Case("create-optimizer-kind", "POST", "/v1/tables", 422, "optimizer.kind",
         {"json": table(optimizer={"kind": "rmsprop"})}),
    Case("create-optimizer-negative-lr", "POST", "/v1/tables", 422, "optimizer.lr",
         {"json": table(optimizer={"kind": "sgd", "lr": -0.1})}),
    Case("create-optimizer-infinite-lr", "POST", "/v1/tables", 422, "optimizer.lr",
         {"content": b'{"name": "new", "num_embeddings": 10, "embedding_dim": 4, '
                     b'"optimizer": {"kind": "sgd", "lr": 1e999}}', "headers": JSON}),
    Case("create-optimizer-unknown-param", "POST", "/v1/tables", 422, "beta9",
         {"json": table(optimizer={"kind": "adam", "beta9": 0.5})}),
    Case("create-negative-seed", "POST", "/v1/tables", 422, "seed", {"json": table(seed=-1)}),
    Case("create-negative-staleness", "POST", "/v1/tables", 422, "max_staleness",
         {"json": table(max_staleness=-1)}),
    Case("create-existing", "POST", "/v1/tables", 409, "'words' already exists",
         {"json": table(name="words")}),
    Case("create-over-budget", "POST", "/v1/tables", 413, "memory budget",
         {"json": table(num_embeddings=10**6, embedding_dim=10**3)}),
    Case("create-not-json", "POST", "/v1/tables", 422, "JSON",
         {"content": b"{name: new}", "headers": JSON}),
    Case("create-json-array", "POST", "/v1/tables", 422, "valid dictionary",
         {"json": [table()]}),
    Case("create-deep-json", "POST", "/v1/tables", 422, "recursion",
         {"content": b"[" * 30_000 + b"]" * 30_000, "headers": JSON}),
    Case("create-bad-utf8", "POST", "/v1/tables", 422, "utf-8",
         {"content": b'{"name": "\xff"}', "headers": JSON}),
    # -- lookup ---------------------------------------------------------------------------
    Case("lookup-missing-ids", "POST", f"{WORDS}/lookup", 422, "ids is required", {"json": {}}),
    Case("lookup-float-ids", "POST", f"{WORDS}/lookup", 422, "ids must be integers",
         {"json": {"ids": [1.5]}}),
    Case("lookup-negative-id", "POST", f"{WORDS}/lookup", 422, "ids must be >= 0, got -1",
         {"json": {"ids": [3, -1]}}),
    Case("lookup-id-out-of-range", "POST", f"{WORDS}/lookup", 422,
         "ids must be < num_embeddings=10", {"json": {"ids": [10]}}),
    Case("lookup-string-ids", "POST", f"{WORDS}/lookup", 422, "strings",
         {"json": {"ids": ["1"]}}),
    Case("lookup-boolean-ids", "POST", f"{WORDS}/lookup", 422, "booleans",
         {"json": {"ids": [True]}}),
    Case("lookup-null-in-ids", "POST", f"{WORDS}/lookup", 422, "64 bits",
         {"json": {"ids": [1, None]}}),
    Case("lookup-ragged-ids", "POST", f"{WORDS}/lookup", 422, "ragged",
         {"json": {"ids": [[1, 2], [3]]}}),
    Case("lookup-deep-ids", "POST", f"{WORDS}/lookup", 422, "nested deeper than 32",
         {"json": {"ids": nested(40)}}),
    Case("lookup-too-many-ids", "POST", f"{WORDS}/lookup", 413, "max_ids_per_request=1000",
         {"json": {"ids": [0] * 1001}}),
    Case("lookup-unknown-field", "POST", f"{WORDS}/lookup", 422, "idz is not a field",
         {"json": {"ids": [1], "idz": [2]}}),
    Case("lookup-no-table", "POST", "/v1/tables/nope/lookup", 404, "'nope' does not exist",
         {"json": {"ids": [1]}}),
    Case("lookup-media-type", "POST", f"{WORDS}/lookup", 415, "text/csv",
         {"content": b"1,2", "headers": {"Content-Type": "text/csv"}}),
    Case("lookup-accept", "POST", f"{WORDS}/lookup", 406, "text/html",
         {"json": {"ids": [1]}, "headers": {"Accept": "text/html"}}),
    Case("lookup-body-array", "POST", f"{WORDS}/lookup", 422, "must be a JSON object",
         {"json": [1, 2]}),
    Case("lookup-invalid-json", "POST", f"{WORDS}/lookup", 422, "not valid JSON",
         {"content": b'{"ids": [1,', "headers": JSON}),
    Case("lookup-nan-literal", "POST", f"{WORDS}/lookup", 422, "not valid JSON",
         {"content": b'{"ids": [NaN]}', "headers": JSON}),
    Case("lookup-npy-garbage", "POST", f"{WORDS}/lookup", 422, "not a valid .npy",
         {"content": b"definitely not numpy", "headers": NPY}),
    Case("lookup-npy-truncated", "POST", f"{WORDS}/lookup", 422, "truncated or padded",
         {"content": codecs.to_npy(np.arange(4))[:-3], "headers": NPY}),
    Case("lookup-npy-pickle", "POST", f"{WORDS}/lookup", 422, "pickled",
         {"content": npy_with_header("|O", (1,), b"\x80\x04N."), "headers": NPY}),
    Case("lookup-npy-float-ids", "POST", f"{WORDS}/lookup", 422, "ids must be integers",
         {"content": codecs.to_npy(np.array([1.0])), "headers": NPY}),
    Case("lookup-npy-shape-wraps", "POST", f"{WORDS}/lookup", 422, "truncated or padded",
         {"content": npy_with_header("<i8", (2**32, 2**32)), "headers": NPY}),
    Case("lookup-npy-empty-but-huge", "POST", f"{WORDS}/lookup", 413,
         "a dimension over max_ids_per_request", {"content": npy_with_header("<i8", (10**6, 0)),
                                                  "headers": NPY}),
    Case("lookup-npy-structured", "POST", f"{WORDS}/lookup", 422, "structured",
         {"content": npy_with_header([("a", "<i8")], (1,), bytes(8)), "headers": NPY}),
    Case("lookup-npy-header-syntax", "POST", f"{WORDS}/lookup", 422, "not a valid .npy",
         {"content": npy_with_header("<i8", (1,)).replace(b"(1,)", b"\xd7), ") + bytes(8),
          "headers": NPY}),
    Case("lookup-npy-zero-itemsize", "POST", f"{WORDS}/lookup", 422, "items have no size",
         {"content": npy_with_header("|V0", (10**18,)), "headers": NPY}),
    Case("lookup-npy-negative-shape", "POST", f"{WORDS}/lookup", 422, "sizes must be integers",
         {"content": npy_with_header("<i8", (-1, -2), bytes(16)), "headers": NPY}),
    Case("lookup-body-too-large", "POST", f"{WORDS}/lookup", 413, "max_body_bytes=65536",
         {"content": b" " * 65537, "headers": JSON}),
    # -- gradients ------------------------------------------------------------------------
    Case("push-missing-grads", "POST", f"{WORDS}/gradients", 422, "grads is required",
         {"json": {"ids": [1]}}),
    Case("push-grads-shape", "POST", f"{WORDS}/gradients", 422, "grads must have shape",
         {"json": {"ids": [1, 2], "grads": [[1, 2, 3, 4]]}}),
    Case("push-grads-strings", "POST", f"{WORDS}/gradients", 422, "grads must be numbers",
         {"json": {"ids": [1], "grads": [["a", "b", "c", "d"]]}}),
    Case("push-grads-overflow-float32", "POST", f"{WORDS}/gradients", 422,
         "fit in the table's float32", {"json": {"ids": [1], "grads": [[1e300, 0, 0, 0]]}}),
    Case("push-grads-infinity-literal", "POST", f"{WORDS}/gradients", 422, "infinity",
         {"content": b'{"ids": [1], "grads": [[1e999, 0, 0, 0]]}', "headers": JSON}),
    Case("push-apply-not-bool", "POST", f"{WORDS}/gradients", 422, "apply must be true or false",
         {"json": {"ids": [1], "grads": [[1, 1, 1, 1]], "apply": "yes"}}),
    Case("push-step-string", "POST", f"{WORDS}/gradients", 422, "step must be an integer",
         {"json": {"ids": [1], "grads": [[1, 1, 1, 1]], "step": "3"}}),
    Case("push-step-negative", "POST", f"{TAGS}/gradients", 422, "step must be >= 0",
         {"json": {"ids": [1], "grads": [[1, 1, 1]], "step": -1}}),
    Case("push-step-ahead", "POST", f"{TAGS}/gradients", 422, "ahead of table 'tags'",
         {"json": {"ids": [1], "grads": [[1, 1, 1]], "step": 9}}),
    Case("push-stale", "POST", f"{TAGS}/gradients", 409, "max_staleness=1",
         {"json": {"ids": [1], "grads": [[1, 1, 1]], "step": 1}}),
    Case("push-unknown-field", "POST", f"{WORDS}/gradients", 422, "lr is not a field",
         {"json": {"ids": [1], "grads": [[1, 1, 1, 1]], "lr": 1}}),
    Case("push-npz-nan", "POST", f"{WORDS}/gradients", 422, "finite",
         {"content": npz(ids=np.array([1]), grads=np.full((1, 4), np.nan)), "headers": NPZ}),
    Case("push-npz-inf", "POST", f"{TAGS}/gradients", 422, "finite",
         {"content": npz(ids=np.array([1]), grads=np.full((1, 3), -np.inf)), "headers": NPZ}),
    Case("push-npz-complex", "POST", f"{WORDS}/gradients", 422, "grads must be numbers",
         {"content": npz(ids=np.array([1]), grads=np.ones((1, 4), np.complex64)),
          "headers": NPZ}),
    Case("push-npz-not-zip", "POST", f"{WORDS}/gradients", 422, "not a valid .npz",
         {"content": b"PK but not really", "headers": NPZ}),
    Case("push-npz-missing-grads", "POST", f"{WORDS}/gradients", 422, "grads is missing",
         {"content": npz(ids=np.array([1])), "headers": NPZ}),
    Case("push-npz-bomb", "POST", f"{WORDS}/gradients", 422, "unpacks to more than 65536",
         {"content": small_bomb(), "headers": NPZ}),
    Case("push-npz-corrupt-deflate", "POST", f"{WORDS}/gradients", 422, "cannot be read",
         {"content": corrupt_deflate(), "headers": NPZ}),
    Case("push-npz-encrypted", "POST", f"{WORDS}/gradients", 422, "cannot be read",
         {"content": encrypted_flag(), "headers": NPZ}),
    Case("push-npz-pickled-ids", "POST", f"{WORDS}/gradients", 422, "pickled",
         {"content": npz(ids=np.array([None], dtype=object), grads=np.ones((1, 4))),
          "headers": NPZ}),
    Case("push-npz-apply-flag", "POST", f"{WORDS}/gradients?apply=maybe", 422,
         "query parameter apply must be true or false",
         {"content": npz(ids=np.array([1]), grads=np.ones((1, 4))), "headers": NPZ}),
    Case("push-npz-step-flag", "POST", f"{WORDS}/gradients?step=1.5", 422,
         "query parameter step must be an integer",
         {"content": npz(ids=np.array([1]), grads=np.ones((1, 4))), "headers": NPZ}),
    Case("push-npy-ids-only", "POST", f"{WORDS}/gradients", 422, "grads is missing",
         {"content": codecs.to_npy(np.array([1])), "headers": NPY}),
    # -- apply ----------------------------------------------------------------------------
    Case("apply-zero-lr", "POST", f"{WORDS}/apply", 422, "lr", {"json": {"lr": 0}}),
    Case("apply-string-lr", "POST", f"{WORDS}/apply", 422, "lr", {"json": {"lr": "fast"}}),
    Case("apply-average-not-bool", "POST", f"{WORDS}/apply", 422, "average",
         {"json": {"average": "sometimes"}}),
    Case("apply-unknown-field", "POST", f"{WORDS}/apply", 422, "steps is not a field",
         {"json": {"steps": 2}}),
    Case("apply-body-array", "POST", f"{WORDS}/apply", 422, "must be a JSON object",
         {"json": [1]}),
    Case("apply-binary", "POST", f"{WORDS}/apply", 415, "application/x-npy",
         {"content": codecs.to_npy(np.array([1])), "headers": NPY}),
    Case("apply-no-table", "POST", "/v1/tables/nope/apply", 404, "'nope' does not exist"),
    # -- weights export and import --------------------------------------------------------
    Case("weights-put-shape", "PUT", f"{WORDS}/weights", 422, "shape [2, 2]",
         {"content": codecs.to_npy(np.zeros((2, 2), np.float32)), "headers": NPY}),
    Case("weights-put-dtype", "PUT", f"{WORDS}/weights", 422, "dtype float64",
         {"content": codecs.to_npy(np.zeros((10, 4))), "headers": NPY}),
    Case("weights-put-nan", "PUT", f"{TAGS}/weights", 422, "finite",
         {"content": codecs.to_npy(np.full((6, 3), np.nan)), "headers": NPY}),
    Case("weights-put-truncated", "PUT", f"{WORDS}/weights", 422, "bytes",
         {"content": codecs.to_npy(np.zeros((10, 4), np.float32))[:-1], "headers": NPY}),
    Case("weights-put-json", "PUT", f"{WORDS}/weights", 415, "application/json",
         {"json": {"vectors": [[0] * 4] * 10}}),
    Case("weights-put-pickle", "PUT", f"{WORDS}/weights", 422, "pickled",
         {"content": npy_with_header("|O", (10, 4), b"\x80\x04N."), "headers": NPY}),
    Case("weights-get-no-table", "GET", "/v1/tables/nope/weights", 404, "'nope' does not exist"),
    Case("weights-get-accept", "GET", f"{WORDS}/weights", 406, "text/html",
         {"headers": {"Accept": "text/html"}}),
    # -- describe, delete, methods --------------------------------------------------------
    Case("get-no-table", "GET", "/v1/tables/nope", 404, "'nope' does not exist"),
    Case("delete-no-table", "DELETE", "/v1/tables/nope", 404, "'nope' does not exist"),
    Case("wrong-method", "PUT", WORDS, 405, "Method Not Allowed", {"json": table()}),
    # -- labels ("words" has labels a, b, c on rows 0, 1, 2) -------------------------------
    Case("labels-duplicate", "PUT", f"{WORDS}/labels", 422, "repeats label 'x'",
         {"json": {"labels": ["x", "y", "x"]}}),
    Case("labels-taken", "PUT", f"{WORDS}/labels", 422, "label 'a' already names row 0",
         {"json": {"ids": [5], "labels": ["a"], "merge": True}}),
    Case("labels-more-than-rows", "PUT", f"{WORDS}/labels", 422,
         "labels has 11 entries, more than the 10 rows of table 'words'",
         {"json": {"labels": [f"w{i}" for i in range(11)]}}),
    Case("labels-too-many", "PUT", f"{WORDS}/labels", 413, "max_ids_per_request=1000",
         {"json": {"labels": [f"w{i}" for i in range(1001)]}}),
    Case("labels-id-out-of-range", "PUT", f"{WORDS}/labels", 422,
         "ids must be < num_embeddings=10", {"json": {"ids": [3, 10], "labels": ["x", "y"]}}),
    Case("labels-id-over-64-bits", "PUT", f"{WORDS}/labels", 422, "ids[0] must fit in 64 bits",
         {"json": {"ids": [2**64], "labels": ["x"]}}),
    Case("labels-not-strings", "PUT", f"{WORDS}/labels", 422, "labels[1] must be a string",
         {"json": {"labels": ["x", 7]}}),
    Case("labels-empty-string", "PUT", f"{WORDS}/labels", 422, "labels[0] must have 1 to 256",
         {"json": {"labels": [""]}}),
    Case("labels-length-mismatch", "PUT", f"{WORDS}/labels", 422, "got 2 ids and 1 labels",
         {"json": {"ids": [1, 2], "labels": ["x"]}}),
    Case("labels-duplicate-ids", "PUT", f"{WORDS}/labels", 422, "ids[1] repeats id 4",
         {"json": {"ids": [4, 4], "labels": ["x", "y"]}}),
    Case("labels-unknown-field", "PUT", f"{WORDS}/labels", 422, "names is not a field",
         {"json": {"labels": ["x"], "names": ["x"]}}),
    Case("labels-no-table", "PUT", "/v1/tables/nope/labels", 404, "'nope' does not exist",
         {"json": {"labels": ["x"]}}),
    Case("labels-get-bad-ids", "GET", f"{WORDS}/labels?ids=1,x", 422,
         "query parameter ids must be integers separated by commas, got 'x'"),
    # -- neighbours -----------------------------------------------------------------------
    Case("neighbors-unknown-label", "POST", f"{WORDS}/neighbors", 422,
         "positive[1]: label 'zebra' names no row", {"json": {"positive": ["a", "zebra"]}}),
    Case("neighbors-no-labels", "POST", f"{TAGS}/neighbors", 422, "the table has no labels",
         {"json": {"positive": ["a"]}}),
    Case("neighbors-id-out-of-range", "POST", f"{WORDS}/neighbors", 422,
         "ids must be < num_embeddings=10", {"json": {"negative": [12]}}),
    Case("neighbors-metric", "POST", f"{WORDS}/neighbors", 422, "metric",
         {"json": {"positive": [1], "metric": "manhattan"}}),
    Case("neighbors-k-zero", "POST", f"{WORDS}/neighbors", 422, "k: Input should be greater",
         {"json": {"positive": [1], "k": 0}}),
    Case("neighbors-k-too-large", "POST", f"{WORDS}/neighbors", 422, "k: Input should be less",
         {"json": {"positive": [1], "k": 1001}}),
    Case("neighbors-zero-query", "POST", f"{WORDS}/neighbors", 422, "zero vector",
         {"json": {"positive": ["b"], "negative": [1]}}),
    Case("neighbors-vector-dim", "POST", f"{WORDS}/neighbors", 422,
         "positive[0] must be a vector of embedding_dim=4 numbers, got shape [3]",
         {"json": {"positive": [[1, 2, 3]]}}),
    Case("neighbors-vector-strings", "POST", f"{WORDS}/neighbors", 422,
         "positive[0] must be a vector of numbers", {"json": {"positive": [["a", 1, 2, 3]]}}),
    Case("neighbors-boolean-item", "POST", f"{WORDS}/neighbors", 422,
         "negative[0] must be an id, a label or a vector, got True",
         {"json": {"positive": [1], "negative": [True]}}),
    Case("neighbors-no-items", "POST", f"{WORDS}/neighbors", 422, "needs at least one item",
         {"json": {"k": 3}}),
    Case("neighbors-both-forms", "POST", f"{WORDS}/neighbors", 422,
         "either queries or positive / negative", {"json": {"positive": [1],
                                                           "queries": [{"positive": [2]}]}}),
    Case("neighbors-bad-query-in-batch", "POST", f"{WORDS}/neighbors", 422,
         "queries[1].positive[0]: label 'zebra'",
         {"json": {"queries": [{"positive": [2]}, {"positive": ["zebra"]}]}}),
    Case("neighbors-too-many-queries", "POST", f"{WORDS}/neighbors", 422, "queries",
         {"json": {"queries": [{"positive": [1]}] * 257}}),
    Case("neighbors-too-many-items", "POST", f"{WORDS}/neighbors", 422, "more than 100",
         {"json": {"positive": [1] * 101}}),
    Case("neighbors-no-table", "POST", "/v1/tables/nope/neighbors", 404,
         "'nope' does not exist", {"json": {"positive": [1]}}),
    # -- projection -----------------------------------------------------------------------
    Case("projection-sample-zero", "GET", f"{WORDS}/projection?sample=0", 422,
         "sample must be in [1, 20000], got 0"),
    Case("projection-sample-text", "GET", f"{WORDS}/projection?sample=many", 422, "sample"),
    Case("projection-negative-seed", "GET", f"{WORDS}/projection?seed=-1", 422,
         "seed must be >= 0"),
    Case("projection-no-table", "GET", "/v1/tables/nope/projection", 404, "'nope' does not exist"),
    # -- dynamic tables ---------------------------------------------------------------------
    Case("create-both-kinds", "POST", "/v1/tables", 422, "not both",
         {"json": table(dynamic={})}),
    Case("create-neither-kind", "POST", "/v1/tables", 422, "not neither",
         {"json": {"name": "new", "embedding_dim": 4}}),
    Case("create-dynamic-not-object", "POST", "/v1/tables", 422, "dynamic",
         {"json": {"name": "new", "embedding_dim": 4, "dynamic": 5}}),
    Case("create-dynamic-capacity-zero", "POST", "/v1/tables", 422, "dynamic.capacity",
         {"json": dynamic(capacity=0)}),
    Case("create-dynamic-capacity-text", "POST", "/v1/tables", 422, "dynamic.capacity",
         {"json": dynamic(capacity="many")}),
    Case("create-dynamic-capacity-fraction", "POST", "/v1/tables", 422, "dynamic.capacity",
         {"json": dynamic(capacity=2.5)}),
    Case("create-dynamic-admit-zero", "POST", "/v1/tables", 422, "dynamic.admit_after",
         {"json": dynamic(admit_after=0)}),
    Case("create-dynamic-admit-null", "POST", "/v1/tables", 422, "dynamic.admit_after",
         {"json": dynamic(admit_after=None)}),
    Case("create-dynamic-evict", "POST", "/v1/tables", 422, "dynamic.evict",
         {"json": dynamic(evict="fifo")}),
    Case("create-dynamic-ttl-zero", "POST", "/v1/tables", 422, "dynamic.ttl_steps",
         {"json": dynamic(ttl_steps=0)}),
    Case("create-dynamic-ttl-negative", "POST", "/v1/tables", 422, "dynamic.ttl_steps",
         {"json": dynamic(ttl_steps=-5)}),
    Case("create-dynamic-candidates-zero", "POST", "/v1/tables", 422, "dynamic.max_candidates",
         {"json": dynamic(max_candidates=0)}),
    Case("create-dynamic-unknown-setting", "POST", "/v1/tables", 422,
         "dynamic.colour is not a field", {"json": dynamic(colour="red")}),
    Case("create-dynamic-existing", "POST", "/v1/tables", 409, "'users' already exists",
         {"json": {**dynamic(), "name": "users"}}),
    Case("dynamic-lookup-over-64-bits", "POST", f"{USERS}/lookup", 422,
         "ids must be integers in [-2**63, 2**64), got one of about 1.845e+19 (JSON integers "
         "beyond 64 bits are read as floats)", {"json": {"ids": [-1, 2**64]}}),
    Case("dynamic-lookup-under-64-bits", "POST", f"{USERS}/lookup", 422,
         "ids must be integers in [-2**63, 2**64), got one of about -9.223e+18",
         {"json": {"ids": [2**63, -(2**63) - 1]}}),
    Case("dynamic-lookup-float-beyond", "POST", f"{USERS}/lookup", 422, "about 1e+30",
         {"json": {"ids": [1, 1e30]}}),
    Case("dynamic-lookup-fraction", "POST", f"{USERS}/lookup", 422,
         "ids must be integers, got values such as 1.5", {"json": {"ids": [2**63, 1.5]}}),
    Case("dynamic-lookup-strings", "POST", f"{USERS}/lookup", 422, "got strings such as '7'",
         {"json": {"ids": ["7"]}}),
    Case("dynamic-lookup-null", "POST", f"{USERS}/lookup", 422, "got values such as None",
         {"json": {"ids": [-1, None]}}),
    Case("dynamic-lookup-booleans", "POST", f"{USERS}/lookup", 422, "booleans",
         {"json": {"ids": [False]}}),
    Case("dynamic-lookup-npy-floats", "POST", f"{USERS}/lookup", 422, "ids must be integers",
         {"content": codecs.to_npy(np.array([2.0**63])), "headers": NPY}),
    Case("dynamic-push-over-64-bits", "POST", f"{USERS}/gradients", 422, "[-2**63, 2**64)",
         {"json": {"ids": [2**64 + 3], "grads": [[1, 1, 1, 1]]}}),
    Case("dynamic-push-grads-shape", "POST", f"{USERS}/gradients", 422, "grads must have shape",
         {"json": {"ids": [-1, 2**63], "grads": [[1, 1, 1, 1]]}}),
    Case("dynamic-push-nan", "POST", f"{USERS}/gradients", 422, "finite",
         {"content": npz(ids=np.array([2**64 - 1], np.uint64), grads=np.full((1, 4), np.nan)),
          "headers": NPZ}),
    Case("dynamic-push-nan-apply", "POST", f"{USERS}/gradients?apply=true", 422, "finite",
         {"content": npz(ids=np.array([5, 99]), grads=np.full((2, 4), np.inf, np.float32)),
          "headers": NPZ}),
    Case("dynamic-push-nan-dropped", "POST", f"{USERS}/gradients", 422, "finite",
         {"content": npz(ids=np.array([424242]), grads=np.full((1, 4), np.nan, np.float32)),
          "headers": NPZ}),
    Case("dynamic-push-stale", "POST", f"{USERS}/gradients", 409, "max_staleness=1",
         {"json": {"ids": [5], "grads": [[1, 1, 1, 1]], "step": 0}}),
    Case("dynamic-weights-put-npy", "PUT", f"{USERS}/weights", 415, "application/x-npz",
         {"content": codecs.to_npy(np.zeros((2, 4), np.float32)), "headers": NPY}),
    Case("dynamic-weights-put-missing", "PUT", f"{USERS}/weights", 422, "weights is missing",
         {"content": npz(ids=np.array([1, 2])), "headers": NPZ}),
    Case("dynamic-weights-put-shape", "PUT", f"{USERS}/weights", 422, "shape [2, 4]",
         {"content": npz(ids=np.array([1, 2]), weights=np.zeros((3, 4), np.float32)),
          "headers": NPZ}),
    Case("dynamic-weights-put-dtype", "PUT", f"{USERS}/weights", 422, "dtype float32",
         {"content": npz(ids=np.array([1, 2]), weights=np.zeros((2, 4))), "headers": NPZ}),
    Case("dynamic-weights-put-repeated", "PUT", f"{USERS}/weights", 422,
         "ids must be distinct, got 7 more than once",
         {"content": npz(ids=np.array([7, 3, 7]), weights=np.zeros((3, 4), np.float32)),
          "headers": NPZ}),
    Case("dynamic-weights-put-nan", "PUT", f"{USERS}/weights", 422,
         "NaN or infinity in the row of id 3",
         {"content": npz(ids=np.array([8, 3]), weights=np.array([[0] * 4, [np.nan] * 4],
                                                                 np.float32)), "headers": NPZ}),
    Case("dynamic-weights-put-float-ids", "PUT", f"{USERS}/weights", 422, "ids must be integers",
         {"content": npz(ids=np.array([1.0]), weights=np.zeros((1, 4), np.float32)),
          "headers": NPZ}),
    Case("dynamic-weights-put-2d-ids", "PUT", f"{USERS}/weights", 422, "1-d array",
         {"content": npz(ids=np.array([[1]]), weights=np.zeros((1, 4), np.float32)),
          "headers": NPZ}),
    Case("dynamic-weights-get-npy", "GET", f"{USERS}/weights", 406, "application/x-npy",
         {"headers": {"Accept": "application/x-npy"}}),
    Case("dynamic-labels-over-64-bits", "PUT", f"{USERS}/labels", 422,
         "ids[1] must fit in 64 bits", {"json": {"ids": [1, 2**64], "labels": ["x", "y"]}}),
    Case("dynamic-labels-taken", "PUT", f"{USERS}/labels", 422, "label 'ann' already names row",
         {"json": {"ids": [12345], "labels": ["ann"], "merge": True}}),
    Case("dynamic-neighbors-not-live", "POST", f"{USERS}/neighbors", 422,
         "id 424242 has no row in table 'users'", {"json": {"positive": [424242]}}),
    Case("dynamic-apply-zero-lr", "POST", f"{USERS}/apply", 422, "lr", {"json": {"lr": 0}}),
]


def checksum(registry: TableRegistry) -> dict[str, str]:
    """A digest per table of everything an operation could change (a dynamic table: its keys
    and their rows and optimizer state, update steps and counts, admission counts, evictions)."""
    digests = {}
    for table in registry:
        digest = hashlib.sha256()
        if isinstance(table, DynamicTable):
            contents = table.capture()
            rows = table.captured_rows(contents.slots)
            table.release()
            for name in (*sorted(rows), "keys", "last_step", "updates"):
                values = rows[name] if name in rows else getattr(contents, name)
                digest.update(name.encode() + values.tobytes())
            for name, values in sorted((contents.admission or {}).items()):
                digest.update(name.encode() + np.asarray(values).tobytes())
            digest.update(f"{contents.evicted_rows} {table.info()}".encode())
        else:
            digest.update(table.weights.tobytes())
            for name in sorted(table.state):
                digest.update(name.encode() + table.state[name].tobytes())
        rows, sums, pushes = table.pending()
        order = np.argsort(rows)
        digest.update(rows[order].tobytes() + sums[order].tobytes())
        digest.update(f"{pushes} {table.step} {table.optimizer.config()}".encode())
        ids, labels = table.labels.items()
        digest.update(f"{ids.tolist()} {labels} {table.changes}".encode())
        digests[table.name] = digest.hexdigest()
    return digests


@pytest.fixture
def app() -> FastAPI:
    return create_app(Settings(max_body_bytes=65536, max_ids_per_request=1000,
                               memory_budget_bytes=10 * 2**20))


def set_up_tables(client: TestClient) -> None:
    """Two tables with optimizer state, steps and a pending gradient for the cases to hit."""
    client.post("/v1/tables", json={"name": "words", "num_embeddings": 10,
                                    "embedding_dim": 4, "seed": 1}).raise_for_status()
    client.post("/v1/tables", json={
        "name": "tags", "num_embeddings": 6, "embedding_dim": 3, "dtype": "float64",
        "optimizer": {"kind": "adam", "lr": 0.5}, "max_staleness": 1, "seed": 2,
    }).raise_for_status()
    for _ in range(3):
        client.post(f"{TAGS}/gradients", json={"ids": [0, 5, 5], "grads": [[1, 2, 3]] * 3,
                                               "apply": True}).raise_for_status()
    client.post(f"{WORDS}/gradients", json={"ids": [1, 2, 2], "grads": [[0.5] * 4] * 3})
    client.put(f"{WORDS}/labels", json={"labels": ["a", "b", "c"]}).raise_for_status()
    client.post("/v1/tables", json={
        "name": "users", "embedding_dim": 4, "optimizer": {"kind": "momentum", "lr": 0.5},
        "max_staleness": 1, "seed": 3,
        "dynamic": {"capacity": 3, "admit_after": 2, "evict": "lfu"}}).raise_for_status()
    keys = [-1, 2**63 + 5, 7, 5, 11]
    for _ in range(3):  # admitted at their second push; step 2
        client.post(f"{USERS}/gradients", json={"ids": keys, "grads": [[1.0] * 4] * 5,
                                                "apply": True}).raise_for_status()
    client.post(f"{USERS}/gradients", json={"ids": [5, 99], "grads": [[0.5] * 4] * 2})
    client.put(f"{USERS}/labels", json={"ids": [-1, 12345678], "labels": ["ann", "bob"]})


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        set_up_tables(client)
        yield client


def test_there_are_enough_distinct_cases() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    assert len({(case.method, case.path, repr(case.request)) for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(app: FastAPI, client: TestClient, case: Case) -> None:
    before = checksum(app.state.registry)
    assert set(before) == {"words", "tags", "users"}
    reply = client.request(case.method, case.path, **case.request)
    assert reply.status_code == case.status, reply.text
    detail = reply.json()["detail"]
    assert isinstance(detail, str)
    assert case.detail in detail
    assert wire_codes().get(reply.headers.get("x-error-code", "")) == case.status  # its code
    assert checksum(app.state.registry) == before
