"""The request side of service.client._http11: what h11 writes is what is sent, each distinct
head is written once, and h11's checks stand for a head sent again."""

from __future__ import annotations

import h11
import httpx
import pytest

from service.client import _http11 as http11
from service.client._http11 import Prepared

ORIGIN = ("http", "127.0.0.1", 8000)


def lookup(body: bytes, length: int | None = None, **extra: bytes) -> Prepared:
    headers = ((b"Host", b"127.0.0.1:8000"), (b"Content-Type", b"application/x-npy"),
               *extra.items(),
               (b"Content-Length", str(len(body) if length is None else length).encode()))
    return Prepared(ORIGIN, b"POST", b"/v1/tables/t/lookup", headers, body)


def written_by_h11(request: Prepared) -> bytes:
    """The oracle: a fresh h11 connection writing the whole request."""
    writer = h11.Connection(h11.CLIENT)
    parts = [writer.send(h11.Request(method=request.method, target=request.target,
                                     headers=list(request.headers))),
             writer.send(h11.Data(data=request.body)), writer.send(h11.EndOfMessage())]
    return b"".join(part for part in parts if part)


def test_a_head_is_written_once_and_sent_as_h11_wrote_it() -> None:
    http11._heads.clear()
    first, again = lookup(b"x" * 100), lookup(b"y" * 100)
    assert b"".join(http11.request_bytes(first)) == written_by_h11(first)
    assert len(http11._heads) == 1
    assert b"".join(http11.request_bytes(again)) == written_by_h11(again)  # the kept head
    assert len(http11._heads) == 1
    other = lookup(b"z" * 101)  # another Content-Length: another head
    assert b"".join(http11.request_bytes(other)) == written_by_h11(other)
    assert len(http11._heads) == 2


def test_a_long_body_is_sent_as_it_is() -> None:
    body = bytes(http11.SEND_TOGETHER_BYTES + 1)
    head, sent = http11.request_bytes(lookup(body))
    assert sent is body and head + sent == written_by_h11(lookup(body))


def test_a_chunked_body_is_framed_by_h11() -> None:
    request = Prepared(ORIGIN, b"POST", b"/x", ((b"Host", b"h"),
                                               (b"Transfer-Encoding", b"chunked")), b"hello")
    assert b"".join(http11.request_bytes(request)) == (
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "request_", [lookup(b"abc", length=4), lookup(b"abc", Bad=b"two\r\nlines")],
    ids=["body-shorter-than-its-length", "line-break-in-a-header"],
)
def test_h11_refuses_what_it_would_not_write(request_: Prepared) -> None:
    http11._heads.clear()
    with pytest.raises(h11.LocalProtocolError) as caught:
        http11.request_bytes(request_)
    converted = http11.as_httpx_error(caught.value, "write", None)
    assert isinstance(converted, httpx.LocalProtocolError)


def test_a_kept_head_is_not_sent_with_a_body_of_another_length() -> None:
    """The same headers (Content-Length 3) with a body of 4 bytes: h11 writes it again, and
    refuses it, rather than the kept head going out with the wrong body."""
    http11._heads.clear()
    http11.request_bytes(lookup(b"abc"))
    with pytest.raises(h11.LocalProtocolError):
        http11.request_bytes(lookup(b"abcd", length=3))
