"""The leader of a cluster-mode table: shard 0's server numbers and orders the table's steps.

A table's step is one number for all its shards. Every request that writes weights (an apply,
an asynchronous push, an import of weights) and every snapshot's instant goes through the
leader, which lets one run at a time (service.cluster.step_gate.StepGate, exclusive) and has
each shard take a step in two phases:

    seal / prepare   each shard sets the step's rows and gradient aside and checks that every
                     new value would be finite (a refusal puts its gradient back)
    commit           each shard writes them and moves to step t (abort: puts them back)

A step one shard refuses changes no shard; every shard takes the steps in the same order with
the same numbers (Adam's bias correction sees the table's step). A push that carries `step`
(a staleness check) goes through the leader too, holding the gate shared: it is checked
against the table's step and reaches every shard before the next step begins. Pushes without
either go from the SDK (or a front) straight to the shards.

A commit a shard did not acknowledge is owed to it and delivered before anything else is sent
to it (a shard that restarted acknowledges any commit: it has nothing set aside and takes the
step number). A leader that restarts first settles what its peers still hold set aside:
committed if any shard has reached that step, else aborted (`recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from service import npy
from service.cluster.peers import Peers, Unreachable
from service.cluster.shard import ShardTable
from service.cluster.step_gate import StepGate
from service.core import checks
from service.core.dynamic.numbered_steps import merge_candidates
from service.core.errors import EmbeddingServiceError, ShardUnavailable
from service.sharding import split

Reply = dict[str, Any]


def unavailable(error: Unreachable) -> ShardUnavailable:
    return ShardUnavailable(f"shard {error.shard} of this table is not reachable (its server "
                            "is restarting or its node is gone); retry shortly")


def failure_of(results: list[Any]) -> BaseException | None:
    """The error to answer with: a refusal before an unreachable shard (the step is refused
    whatever the others say), else the first exception."""
    errors = [result for result in results if isinstance(result, BaseException)]
    for error in errors:
        if isinstance(error, EmbeddingServiceError):
            return error
    if errors:
        return unavailable(errors[0]) if isinstance(errors[0], Unreachable) else errors[0]
    return None


class Leader:
    """Shard 0's coordination of its table (`shard` is shard 0 itself)."""

    def __init__(self, shard: ShardTable, peers: Peers) -> None:
        self.shard = shard
        self.peers = peers
        self.gate = StepGate()
        self.owed: dict[int, list[tuple[str, int]]] = {}  # shard -> commits not acknowledged
        self.unsettled: set[int] = set()  # peers not yet settled after this leader's restart

    @property
    def others(self) -> list[int]:
        return list(range(1, self.shard.place.shards))

    # -- talking to the shards ---------------------------------------------------------------
    async def send(self, shard: int, operation: str, **kwargs: Any) -> Any:
        """One request to a peer, after what it is owed (and, after a restart, once settled).
        A peer that cannot be reached may have moved: its address is asked again once."""
        try:
            return await self._send(shard, operation, **kwargs)
        except Unreachable:
            if not await self.peers.refresh():
                raise
        return await self._send(shard, operation, **kwargs)

    async def _send(self, shard: int, operation: str, **kwargs: Any) -> Any:
        if shard in self.unsettled:
            await self.settle_peer(shard, self.shard.step)
        owed = self.owed.get(shard, [])
        while owed:
            txn, step = owed[0]
            await self.peers.call(shard, "commit", fields={"txn": txn, "step": step})
            owed.pop(0)
        return await self.peers.call(shard, operation, **kwargs)

    async def round(self, local: Callable[[], Any], operation: str,
                    per_shard: Callable[[int], dict[str, Any]] | None = None,
                    **kwargs: Any) -> list[Any]:
        """The operation on every shard at once: shard 0 here (`local`), the others by HTTP
        (`per_shard(k)` gives shard k's own arguments). Each reply or its exception."""
        sent = [asyncio.ensure_future(self.send(shard, operation, **(per_shard(shard)
                                                                      if per_shard else kwargs)))
                for shard in self.others]
        await asyncio.sleep(0)  # the requests leave before shard 0 does its part
        try:
            mine: Any = local()
        except Exception as error:  # noqa: BLE001 - reported with the others' answers
            mine = error
        theirs = await asyncio.gather(*sent, return_exceptions=True)
        return [mine, *theirs]

    async def settle(self, txn: str, results: list[Any], operation: str = "abort") -> None:
        """Abort (or release) `txn` on the shards that set something aside for it."""
        holders = [shard for shard, result in enumerate(results)
                   if not isinstance(result, BaseException)]
        if 0 in holders:
            getattr(self.shard, operation)(txn)
        for shard in holders:
            if shard:
                with contextlib.suppress(Unreachable, EmbeddingServiceError):
                    await self.send(shard, operation, fields={"txn": txn})

    async def commit(self, txn: str, step: int) -> int:
        """Phase two everywhere; a peer that does not answer is owed the commit. Returns the
        rows shard 0 updated."""
        sent = [asyncio.ensure_future(self.send(shard, "commit",
                                                fields={"txn": txn, "step": step}))
                for shard in self.others]
        await asyncio.sleep(0)
        updated = self.shard.commit(txn, step)
        for shard, result in zip(self.others, await asyncio.gather(*sent, return_exceptions=True),
                                 strict=True):
            if isinstance(result, BaseException):
                self.owed.setdefault(shard, []).append((txn, step))
        return updated

    # -- the table's writes ------------------------------------------------------------------
    async def apply(self, lr: float | None, average: bool) -> Reply:
        """One step over every pending row of every shard (nothing pending anywhere: nothing
        changes, the step does not advance)."""
        async with self.gate.exclusive():
            shard = self.shard
            rate = shard.table.optimizer.lr if lr is None else float(lr)
            txn, step, results = await self.numbered(lambda: self.seal(rate, average))
            rows = sum(result["rows"] for result in results)
            if rows == 0:
                await self.settle(txn, results, "release")
                return {"step": step - 1, "rows_updated": 0}
            if average:
                divisor = sum(result["pushes"] for result in results)
                checked = await self.round(lambda: shard.divide(txn, divisor), "divide",
                                           fields={"txn": txn, "divisor": divisor})
                failure = failure_of(checked)
                if failure is not None:
                    await self.settle(txn, results)
                    raise failure
            await self.commit(txn, step)
            await self.evict_to_capacity()
            return {"step": step, "rows_updated": rows}

    async def push_now(self, ids: np.ndarray, grads: np.ndarray, step: int | None) -> Reply:
        """An asynchronous push (apply=true): one step of the pushed rows, on every shard."""
        async with self.gate.exclusive():
            shard = self.shard
            checks.check_staleness(step, shard.step, shard.spec.max_staleness, shard.name)
            flat_ids = ids.reshape(-1)
            flat_grads = grads.reshape(len(flat_ids), shard.embedding_dim)  # (n, dim)
            if flat_ids.size == 0:  # an empty step changes nothing, as apply() with nothing
                pending = await self.pending_rows()
                empty = {"rows": 0, "pending_rows": pending, "step": shard.step,
                         "rows_updated": 0}
                return empty if shard.spec.dynamic is None else {**empty, "dropped_rows": 0}
            parts = split(flat_ids, shard.place.shards)
            ids_of = parts.parts(flat_ids)
            grads_of = parts.parts(flat_grads)
            txn, next_step, results = await self.numbered(lambda: self.prepare(ids_of, grads_of))
            updated = sum(result["distinct"] for result in results)
            if updated == 0:  # every key dropped (a dynamic table's admission): no step, as
                next_step = shard.step  # in one table; the admission is still counted
            await self.commit(txn, next_step)
            await self.evict_to_capacity()
            reply = {"rows": int(flat_ids.size),
                     "pending_rows": sum(result["pending_rows"] for result in results),
                     "step": next_step, "rows_updated": updated}
            if shard.spec.dynamic is not None:
                reply["dropped_rows"] = sum(result["dropped_rows"] for result in results)
            return reply

    async def seal(self, rate: float, average: bool) -> tuple[str, int, list[Any]]:
        """Phase one of an apply, numbered the leader's step + 1: (txn, step, replies)."""
        shard = self.shard
        step, txn = shard.step + 1, uuid.uuid4().hex
        fields = {"txn": txn, "step": step, "lr": rate, "check": not average}
        results = await self.round(lambda: shard.seal(txn, step, rate, not average), "seal",
                                   fields=fields)
        failure = failure_of(results)
        if failure is not None:
            await self.settle(txn, results)
            raise failure
        return txn, step, results

    async def prepare(self, ids_of: list[np.ndarray], grads_of: list[np.ndarray]
                      ) -> tuple[str, int, list[Any]]:
        """Phase one of an asynchronous push, each shard its part: (txn, step, replies)."""
        shard = self.shard
        txn, step, rate = uuid.uuid4().hex, shard.step + 1, shard.table.optimizer.lr
        query = {"txn": txn, "step": str(step), "lr": repr(rate)}
        results = await self.round(
            lambda: shard.prepare_push(txn, step, rate, ids_of[0], grads_of[0]), "prepare",
            per_shard=lambda k: {"body": npy.encode(ids_of[k], grads_of[k]), "query": query})
        failure = failure_of(results)
        if failure is not None:
            await self.settle(txn, results)
            raise failure
        return txn, step, results

    async def numbered(self, phase_one: Callable[[], Awaitable[tuple[str, int, list[Any]]]]
                       ) -> tuple[str, int, list[Any]]:
        """Phase one of a step (seal or prepare): (txn, step, replies). A shard ahead of this
        leader (caught_up): the leader catches up and numbers the step again, three times at
        most; then ShardUnavailable."""
        for _ in range(3):
            txn, step, results = await phase_one()
            if not await self.caught_up(txn, results):
                return txn, step, results
        raise ShardUnavailable("the table's shards disagree on its step; retry shortly")

    async def caught_up(self, txn: str, results: list[Any]) -> bool:
        """Whether a shard said it is already at or past the step being numbered (a leader
        that restarted while that shard was out of reach starts from its snapshot's step):
        then what was set aside is put back, this leader takes the highest step, and the
        caller numbers the step again."""
        ahead = [result["ahead"] for result in results if "ahead" in result]
        if not ahead:
            return False
        await self.settle(txn, results)
        self.shard.commit("", max(ahead))
        return True

    async def evict_to_capacity(self) -> None:
        """A dynamic table with a capacity, after a step: while its live rows (on every shard)
        exceed it, the rows first to leave by its policy, ties to the smaller key, chosen from
        every shard's candidates (service.core.dynamic.numbered_steps): the rows one table
        would have evicted. A shard that does not answer leaves the table over capacity until
        the next step's round (which counts again)."""
        shard = self.shard
        capacity = shard.capacity
        if capacity is None:
            return
        statuses = await self.round(shard.stats, "status", fields={})
        if failure_of(statuses) is not None:
            return
        excess = sum(int(status["rows"]) for status in statuses) - capacity
        if excess <= 0:
            return
        found = await self.round(lambda: shard.eviction_candidates(excess), "candidates",
                                 fields={"count": excess})
        if failure_of(found) is not None:
            return
        chosen = merge_candidates([(np.asarray(each["values"], dtype=np.int64),
                                    np.asarray(each["keys"], dtype=np.int64))
                                   for each in found], excess)
        await self.round(lambda: shard.evict_keys(chosen[0]), "evict",
                         per_shard=lambda k: {"fields": {"keys": chosen[k].tolist()}})

    async def pending_rows(self) -> int:
        results = await self.round(lambda: self.shard.stats(), "status", fields={})
        failure = failure_of(results)
        if failure is not None:
            raise failure
        return sum(result["pending_rows"] for result in results)

    @contextlib.asynccontextmanager
    async def between_steps(self, step: int | None) -> AsyncIterator[None]:
        """A staleness-checked push: checked against the table's step, and no step begins
        until every shard has its part."""
        async with self.gate.shared():
            shard = self.shard
            checks.check_staleness(step, shard.step, shard.spec.max_staleness, shard.name)
            yield

    async def capture(self) -> int:
        """Every shard's snapshot instant, between two steps: the step they all hold."""
        async with self.gate.exclusive():
            results = await self.round(self.shard.snapshot_capture, "capture", fields={})
            failure = failure_of(results)
            if failure is not None:
                raise failure
            return int(results[0])

    async def replace_weights(self, token: str) -> int:
        """Make every shard's staged weights (stage_weights) its weights, between steps.
        Returns the pending rows dropped."""
        async with self.gate.exclusive():
            results = await self.round(lambda: self.shard.swap_weights(token), "swap",
                                       fields={"token": token})
            failure = failure_of(results)
            if failure is not None:
                raise failure
            await self.evict_to_capacity()
            return sum(int(result) for result in results)

    # -- after a restart ---------------------------------------------------------------------
    async def recover(self) -> int:
        """Settle what the peers set aside under the previous leader, and take the table's
        step: the highest any shard that answers holds. A peer that does not answer now (it
        may be restarting too) is settled before anything else is sent to it; if it is ahead,
        its answer to the next step says so (caught_up)."""
        statuses = await asyncio.gather(*(self.peers.call(shard, "status", fields={})
                                          for shard in self.others), return_exceptions=True)
        steps = [status["step"] for status in statuses if not isinstance(status, BaseException)]
        step = max([self.shard.step, *steps])
        self.shard.commit("", step)
        for shard, status in zip(self.others, statuses, strict=True):
            if isinstance(status, BaseException):
                self.unsettled.add(shard)
            else:
                await self._settle(shard, status, step)
        return int(step)

    async def settle_peer(self, shard: int, step: int) -> None:
        await self._settle(shard, await self.peers.call(shard, "status", fields={}), step)

    async def _settle(self, shard: int, status: dict[str, Any], step: int) -> None:
        """Commit what a peer holds for a step some shard reached, abort the rest."""
        for txn, txn_step in status["prepared"]:
            operation = "commit" if step >= txn_step else "abort"
            await self.peers.call(shard, operation, fields={"txn": txn, "step": txn_step})
        self.unsettled.discard(shard)
