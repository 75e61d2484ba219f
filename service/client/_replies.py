"""Replies as both clients' transports read them: httptools (llhttp, the C parser Node.js and
uvicorn use) parses every byte received, and says where the reply's head and body end, whether
it is chunked, whether the connection may carry another request (Connection: close in any
spelling, HTTP/1.0, a body that runs to the close), and what came past the reply; this module
only keeps what it is told and decides where received bytes land. Nothing here does I/O.

Where the bytes land: a body up to IN_PLACE_BYTES is the bytes object httptools hands over (one
piece: no copy of ours). A longer one, of a Content-Length llhttp accepted, goes into one buffer
of that size allocated at the head (not zeroed): what came with the head is copied in, and the
transports receive the rest straight into it (`space`, then `received_in_place`) and feed llhttp
those bytes where they lie, so the body is copied once, by the kernel. llhttp still reads every
one of them: the reply ends where it says, and bytes received in place count once it has
passed every one of them on as body.

What httptools cannot be told, h11 judges from the reply's bytes (kept while a reply has no
Content-Length): that the connection was closed (llhttp_finish is not exposed), which ends a
body that runs to the close (RFC 9112 6.3, rule 8); and that the request was a HEAD (llhttp's
skip-body flag), whose reply ends with its head.
"""

from __future__ import annotations

import h11
import httptools
import httpx
import numpy as np

IN_PLACE_BYTES = 64 * 2**10  # a longer body (of a known length) gets a buffer of its own
FEED_BYTES = 256 * 2**10  # received in place and fed to llhttp at most this much at a time


class Reply:
    """The reply on one connection, as llhttp parses it (the parser's protocol object). Made
    once per connection (llhttp keeps its state between replies); `start` before each request,
    then `receive` (or `space` and `received_in_place`) until `complete`."""

    __slots__ = ("parser", "head_request", "status", "reason", "headers", "head_done",
                 "complete", "reusable", "past", "size", "buffer", "filled", "pieces", "raw",
                 "in_place")

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.start(b"GET")

    def start(self, method: bytes) -> None:
        self.head_request = method == b"HEAD"
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = self.complete = self.reusable = self.past = False
        self.size = -1  # the body's Content-Length, as llhttp accepted it; -1 without one
        self.buffer: memoryview | None = None  # a long body's own buffer, (size,) bytes
        self.filled = 0
        self.pieces: list[bytes] = []  # a short body, as httptools passed it on
        self.raw: list[bytes] | None = []  # the bytes received, while h11 may have to judge
        self.in_place: int | None = None  # body bytes llhttp found in the buffer itself

    # -- what the transports call ------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Take in bytes received (b"" when the server closed its end)."""
        if not data:
            self._closed()
            return
        if self.raw is not None:
            self.raw.append(data)
        self._feed(data)
        if self.head_request and self.head_done and not self.complete:
            self._judged_by_h11(closed=False)

    def space(self) -> memoryview | None:
        """Where the next bytes of a long body go, to receive them in place; None when they
        are to be received as a bytes object (the head, short bodies, what follows a body)."""
        if self.buffer is None or self.complete or self.filled >= self.size:
            return None
        return self.buffer[self.filled : min(self.size, self.filled + FEED_BYTES)]

    def received_in_place(self, count: int) -> None:
        """`count` bytes were received into space(): llhttp parses them where they lie. They
        are body, all of them: space() ends where the Content-Length llhttp accepted does."""
        if not count:
            self._closed()
            return
        assert self.buffer is not None
        start = self.filled
        self.in_place = 0
        try:
            self._feed(self.buffer[start : start + count])
            placed = self.in_place
        finally:
            self.in_place = None
        if placed != count:
            raise httpx.RemoteProtocolError(f"llhttp took {placed} of {count} bytes as body")
        self.filled = start + count

    def content(self) -> bytes | memoryview:
        """The body, handed over (the reply keeps no hold of it): bytes, or a read-only
        memoryview of a long body's buffer."""
        if self.buffer is not None:
            body: bytes | memoryview = self.buffer[: self.filled].toreadonly()
        else:
            body = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        self.buffer, self.pieces, self.raw = None, [], None
        return body

    def forget(self) -> None:
        """Let go of the parser (it holds this object's methods): the connection is closed."""
        self.parser = None

    # -- llhttp's callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            self.past = True  # bytes past the reply: this connection carries nothing more

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim (1xx) reply: the reply follows it
        self.head_done = True
        if self.head_request:
            return  # no body follows, whatever the head says: h11 judges (receive)
        for name, value in self.headers:
            if name.lower() == b"content-length":  # llhttp has checked it: one, all digits
                self.size = int(value)
                self.raw = None  # the body ends where llhttp says, the close or not
                if self.size > IN_PLACE_BYTES:
                    self.buffer = np.empty(self.size, dtype=np.uint8).data  # (size,) bytes

    def on_body(self, piece: bytes) -> None:
        if self.in_place is not None:
            self.in_place += len(piece)  # already where it goes: counted, not copied
        elif self.buffer is not None:
            self._into_buffer(piece)
        else:
            self.pieces.append(piece)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        if self.status < 200:  # the end of an interim reply: start over for the reply
            self.status, self.reason, self.headers = 0, b"", []
            return
        self.complete = True
        # asked here: llhttp forgets the reply's flags once this callback returns
        self.reusable = (self.parser.should_keep_alive()
                         and self.parser.get_http_version() == "1.1")

    # -- inside ------------------------------------------------------------------------------
    def _feed(self, data: bytes | memoryview) -> None:
        if self.parser is None:
            raise httpx.ReadError("the connection is closed")
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError("the server switched protocols unasked") from None
        except httptools.HttpParserError as error:
            if not self.complete:
                raise httpx.RemoteProtocolError(f"malformed reply: {error}") from error
            self.past = True  # junk past a whole reply: the reply stands, the connection not

    def _into_buffer(self, piece: bytes) -> None:
        assert self.buffer is not None
        end = self.filled + len(piece)
        if end > self.size:
            raise httpx.RemoteProtocolError("the reply's body is longer than its Content-Length")
        self.buffer[self.filled : end] = piece
        self.filled = end

    def _closed(self) -> None:
        """The server closed the connection before llhttp saw the reply end."""
        if self.complete:
            return
        if self.raw == []:
            raise httpx.RemoteProtocolError("the server closed the connection without replying")
        if self.raw is None or not self.head_done:  # a body of a known length, or a head, cut
            raise httpx.RemoteProtocolError("the server closed the connection mid-reply")
        self._judged_by_h11(closed=True)

    def _judged_by_h11(self, *, closed: bool) -> None:
        """h11's verdict on the bytes received (and the close): the reply's body, or an
        error. The connection carries nothing more (llhttp's state is not the reply's end)."""
        assert self.raw is not None
        judge = h11.Connection(h11.CLIENT)
        judge.send(h11.Request(method=b"HEAD" if self.head_request else b"GET", target=b"/",
                               headers=[(b"Host", b"judged")]))
        judge.send(h11.EndOfMessage())
        judge.receive_data(b"".join(self.raw))
        if closed:
            judge.receive_data(b"")
        pieces: list[bytes] = []
        try:
            while True:
                event = judge.next_event()
                if isinstance(event, h11.Data):
                    pieces.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError("the server closed the connection mid-reply")
        except h11.RemoteProtocolError as error:
            raise httpx.RemoteProtocolError(f"malformed reply: {error}") from error
        self.pieces, self.buffer = pieces, None
        self.complete, self.reusable = True, False
