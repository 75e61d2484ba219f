"""Error sentences that say exactly what was wrong: media types, JSON nesting, 64-bit ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api import codecs
from service.core.errors import InvalidRequest
from tests.api.helpers import create


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_a_415_names_each_accepted_type_once(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app()) as client:
        create(client, "words")
        apply = client.post("/v1/tables/words/apply", content=b"{}",
                            headers={"Content-Type": "text/plain"})
        lookup = client.post("/v1/tables/words/lookup", content=b"1",
                             headers={"Content-Type": "text/plain"})
        push = client.post("/v1/tables/words/gradients", content=b"1",
                           headers={"Content-Type": "text/plain"})
    assert apply.status_code == 415
    assert apply.json()["detail"] == (
        "Content-Type 'text/plain' is not supported here; send 'application/json'")
    assert lookup.json()["detail"] == ("Content-Type 'text/plain' is not supported here; send "
                                       "'application/json' or 'application/x-npy'")
    assert push.json()["detail"] == ("Content-Type 'text/plain' is not supported here; send "
                                     "'application/json', 'application/x-npz' or "
                                     "'application/x-npy'")


@pytest.mark.parametrize("max_depth", [1, 2, 32])
def test_max_json_depth_is_the_number_of_levels(max_depth: int) -> None:
    """max_json_depth=32 takes ids nested 32 deep and refuses 33 (gradients: one level more)."""
    assert codecs.json_array(nested(max_depth), "ids", "iu", max_depth).ndim == max_depth
    with pytest.raises(InvalidRequest, match=f"^ids is nested deeper than {max_depth} levels$"):
        codecs.json_array(nested(max_depth + 1), "ids", "iu", max_depth)


def test_the_depth_limit_over_http(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(max_json_depth=32)) as client:
        create(client, "words")
        ok = client.post("/v1/tables/words/lookup", json={"ids": nested(32)})
        deep = client.post("/v1/tables/words/lookup", json={"ids": nested(33)})
    assert ok.status_code == 200 and len(ok.json()["shape"]) == 33
    assert deep.status_code == 422
    assert deep.json()["detail"] == "ids is nested deeper than 32 levels"


@pytest.mark.parametrize(("text", "shown"), [
    (b'{"ids": [1000000000000000000000000000000]}', "1e+30"),
    (b'{"ids": [1, 18446744073709551615]}', "1.845e+19"),
    (b'{"ids": [-9223372036854775809]}', "-9.223e+18"),
])
def test_an_integer_over_64_bits_is_named_as_such(
    make_app: Callable[..., FastAPI], text: bytes, shown: str
) -> None:
    with TestClient(make_app()) as client:
        create(client, "words")
        reply = client.post("/v1/tables/words/lookup", content=text,
                            headers={"Content-Type": "application/json"})
    assert reply.status_code == 422
    assert reply.json()["detail"] == (
        f"ids must be integers between -2**63 and 2**63 - 1, got one of about {shown} (JSON "
        "integers beyond 64 bits are read as floats)"
    )


def test_a_fractional_id_is_still_not_an_integer(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app()) as client:
        create(client, "words")
        reply = client.post("/v1/tables/words/lookup", json={"ids": [1.5]})
    assert reply.json()["detail"] == "ids must be integers, got values such as 1.5"
