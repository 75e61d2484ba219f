"""A request body in pieces (service.api.connections.BoundedHttpProtocol.on_body): the app gets
the same bytes as from uvicorn's own protocol, whether it reads each piece as it arrives or
several arrive before it reads, and a piece read as it arrives is handed over as it came from
the parser, not copied twice (uvicorn joins every piece into a bytearray and copies that again).

Both protocols are driven in-process through the recording transport of test_one_write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.api.test_one_write import connected, ours


def pieces_of(body: bytes, sizes: list[int]) -> list[bytes]:
    cuts = [0]
    for size in sizes:
        cuts.append(min(len(body), cuts[-1] + size))
    cuts.append(len(body))
    return [body[start:end] for start, end in zip(cuts, cuts[1:], strict=False) if end > start]


def received(protocol_class: Callable[..., Any], body: bytes, sizes: list[int],
             steps_between: int) -> tuple[list[bytes], list[bytes], bytes]:
    """(the bodies the parser handed on_body, the bodies the app's receive() returned, the
    reply): the request's head, then its body in pieces of `sizes`, each its own
    data_received, with `steps_between` loop steps after each (0: they pile up unread)."""
    handed: list[bytes] = []
    messages: list[bytes] = []

    class Recording(protocol_class):  # type: ignore[misc, valid-type]
        def on_body(self, piece: bytes) -> None:
            handed.append(piece)
            super().on_body(piece)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            message = await receive()
            messages.append(message["body"])
            more = message.get("more_body", False)
        echo = b"".join(messages)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(echo)).encode())]})
        await send({"type": "http.response.body", "body": echo})

    async def run() -> bytes:
        protocol, transport = connected(Recording, app)
        protocol.data_received(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: "
                               + str(len(body)).encode() + b"\r\n\r\n")
        for piece in pieces_of(body, sizes):
            for _ in range(steps_between):
                await asyncio.sleep(0)
            protocol.data_received(piece)
        for _ in range(50):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return b"".join(transport.writes)

    reply = asyncio.run(run())
    return handed, messages, reply


BODY = bytes(range(256)) * 4096  # 1 MiB


@pytest.mark.parametrize("sizes", [
    [],  # the whole body in one piece
    [65536] * 16,  # at the high-water mark: reading pauses after each
    [256000, 256000, 256000, 256000],  # what uvloop reads at a time
    [1, 2, 3, 70000, 5, 200000],  # small and large, the rest in one
])
@pytest.mark.parametrize("steps_between", [0, 10])
def test_the_app_gets_the_same_body_as_from_uvicorn(sizes: list[int],
                                                    steps_between: int) -> None:
    _, theirs, their_reply = received(HttpToolsProtocol, BODY, sizes, steps_between)
    _, ours_, our_reply = received(ours(), BODY, sizes, steps_between)
    assert b"".join(ours_) == b"".join(theirs) == BODY
    assert our_reply == their_reply and our_reply.endswith(BODY)


def test_a_piece_read_as_it_arrives_is_not_copied() -> None:
    handed, messages, _ = received(ours(), BODY, [65536] * 16, steps_between=10)
    assert len(messages) == len(handed) == 16
    assert all(message is piece for message, piece in zip(messages, handed, strict=True))


def test_pieces_that_pile_up_unread_are_joined() -> None:
    handed, messages, _ = received(ours(), BODY, [1000] * 10, steps_between=0)
    assert len(handed) == 11 and len(messages) < len(handed)
    assert b"".join(messages) == BODY
