"""Group commit: concurrent callers' small writes run together, one transaction per group.

A hot single-item write (a lead capture, say) spends most of its time on per-transaction
costs — the connection checkout, BEGIN and COMMIT, one statement round trip per table —
that a set-based write of several items pays once. ``GroupCommit.submit`` queues an item
and waits for its own result; at most ``max_in_flight`` groups run at a time, each taking
everything queued (up to ``max_group``) when it starts. Nothing waits for a group to fill:
an idle service runs each item at once, alone, so latency at low load is unchanged, and
under load the queue that builds while a group runs becomes the next group.

The group function answers per item: a result, or the exception that item raises. An
exception it raises itself fails every item of the group; a group function that can tell a
bad item from a bad moment (a deadlock, say) retries the items one at a time itself.

A caller that gives up (its request is cancelled) before its group starts is dropped; once
the group has started, the item's write completes without it, as a transaction whose
client disconnected after COMMIT would."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from crm_platform.metrics import GROUP_COMMIT_TRANSACTIONS, GROUP_COMMIT_WRITES

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_group: int = 64,
        max_in_flight: int = 2,
    ) -> None:
        if max_group < 1 or max_in_flight < 1:
            raise ValueError("max_group and max_in_flight must be at least 1")
        self._run = run
        self._max_group = max_group
        self._max_in_flight = max_in_flight
        self._queue: deque[tuple[T, asyncio.Future[R], contextvars.Context]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._writes = GROUP_COMMIT_WRITES.labels(name)
        self._transactions = GROUP_COMMIT_TRANSACTIONS.labels(name)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, contextvars.copy_context()))
        self._start_groups()
        return await future

    def _start_groups(self) -> None:
        while self._queue and len(self._in_flight) < self._max_in_flight:
            group: list[tuple[T, asyncio.Future[R]]] = []
            first: contextvars.Context | None = None
            while self._queue and len(group) < self._max_group:
                item, future, submitted_in = self._queue.popleft()
                if not future.cancelled():
                    group.append((item, future))
                    first = first or submitted_in
            if first is None:
                return
            # The group runs in its first item's context (its trace, its log fields), also
            # when started from another group's completion.
            task = asyncio.create_task(self._write(group), context=first)
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start_groups()

    async def _write(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in group]
        self._writes.inc(len(items))
        self._transactions.inc()
        try:
            results = list(await self._run(items))
            if len(results) != len(items):
                raise RuntimeError(f"group answered {len(results)} results for {len(items)} items")
        except BaseException as exc:  # every waiter must hear, whatever happened
            for _, future in group:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(group, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
