"""A long lookup's reply, sent while its rows are read: a worker thread gathers the rows block
by block under the table's lock (EmbeddingTable.lookup's `progress`, service.core.gather), and
the event loop sends each block as soon as it is in the reply buffer, so gathering and sending
overlap instead of following each other. The reply is the same bytes as a whole one (an .npy of
a known Content-Length), every row read at the one step X-Table-Step says: the lock is held for
the whole gather, as for any lookup, and the step is known once it is taken, before anything is
sent. Only the timing differs.

    reply = await RowStream.start(table, ids, buffer, rows)   # once the first block is read
    return reply                                               # a starlette Response
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.api.codecs import NPY


class RowStream(Response):
    """The reply of a lookup whose rows are still being read (`start` makes one)."""

    def __init__(self, buffer: np.ndarray, header_bytes: int, row_bytes: int) -> None:
        super().__init__(buffer.data, media_type=NPY)
        self.header_bytes, self.row_bytes = header_bytes, row_bytes
        self.rows_read = 0  # rows in the buffer so far (flattened ids)
        self.moved = asyncio.Event()  # rows_read grew, or the reading ended
        self.reading: asyncio.Future[Any] | None = None

    @classmethod
    async def start(
        cls, table: Any, ids: np.ndarray, buffer: np.ndarray, rows: np.ndarray
    ) -> RowStream:
        """Start reading W[ids] into `rows` (the view of `buffer` after its .npy header) in a
        worker thread; return once the first block is read (the step, and with it the headers,
        known), or raise what the lookup raised before reading a row (no reply started)."""
        reply = cls(buffer, buffer.nbytes - rows.nbytes, rows.nbytes // max(1, ids.size))
        loop = asyncio.get_running_loop()
        step: list[int] = []

        def progress(rows_read: int, at_step: int) -> None:  # in the worker, under the lock
            if not step:
                step.append(at_step)
            loop.call_soon_threadsafe(reply.read_up_to, rows_read)

        reply.reading = asyncio.ensure_future(
            run_in_threadpool(table.lookup, ids, rows, progress=progress))
        reply.reading.add_done_callback(reply.reading_ended)
        while reply.rows_read == 0 and not reply.reading.done():
            await reply.next_move()
        if not step:
            await reply.reading  # the lookup's error (or, for no rows at all, its step)
        at_step = step[0] if step else reply.reading.result()[1]
        reply.init_headers({"X-Table-Step": str(at_step)})  # as handlers.lookup's whole reply
        return reply

    def read_up_to(self, rows_read: int) -> None:
        self.rows_read = rows_read
        self.moved.set()

    def reading_ended(self, reading: asyncio.Future[Any]) -> None:
        if not reading.cancelled():
            reading.exception()  # looked at here: an error after the client left is not "lost"
        self.moved.set()

    async def next_move(self) -> None:
        await self.moved.wait()
        self.moved.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.reading is not None
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        body = memoryview(self.body)
        sent = 0
        while sent < len(body):
            if self.reading.done():
                self.reading.result()  # a failure mid-way ends the reply: the connection closes
                ready = len(body)
            else:
                ready = self.header_bytes + self.rows_read * self.row_bytes
            if ready > sent:
                await send({"type": "http.response.body", "body": body[sent:ready],
                            "more_body": ready < len(body)})
                sent = ready
            else:
                await self.next_move()
