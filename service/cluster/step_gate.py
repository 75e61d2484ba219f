"""The gate a cluster-mode table's leader (service.cluster.leader) passes its writes through:
a step (an apply, an asynchronous push, an import of weights, a snapshot's instant) holds it
alone; pushes that carry `step` (a staleness check) hold it together, between two steps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class StepGate:
    """One exclusive holder (a step) or any number of shared ones (staleness-checked pushes);
    a waiting step goes before newly arriving shared holders. For one event loop."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._steps_waiting = 0

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._changed:
            self._steps_waiting += 1
            try:
                await self._changed.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._steps_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._changed:
                self._exclusive = False
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._exclusive and not self._steps_waiting)
            self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                self._shared -= 1
                self._changed.notify_all()
