"""crm_platform.group_commit: concurrent submits form groups, each item hears its own
answer, a failed group fails all of its items, a caller that left before its group started
is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from crm_platform.group_commit import GroupCommit


class Recorder:
    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.running = 0
        self.most_running = 0

    async def run(self, items: Sequence[int]) -> list[str | BaseException]:
        self.groups.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [ValueError(f"bad {i}") if i < 0 else f"done {i}" for i in items]


async def test_a_lone_item_is_written_at_once_alone() -> None:
    rec = Recorder()
    group: GroupCommit[int, str] = GroupCommit("t-alone", rec.run)
    assert await group.submit(1) == "done 1"
    assert rec.groups == [[1]]


async def test_items_queued_while_groups_run_form_the_next_group() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[int, str] = GroupCommit("t-queue", rec.run, max_in_flight=2)
    waiting = [asyncio.create_task(group.submit(i)) for i in range(10)]
    await asyncio.sleep(0.01)
    # The first two started a group each at once; the rest wait for a free slot.
    assert rec.groups == [[0], [1]]
    rec.release.set()
    assert await asyncio.gather(*waiting) == [f"done {i}" for i in range(10)]
    assert rec.groups == [[0], [1], [2, 3, 4, 5, 6, 7, 8, 9]]
    assert rec.most_running == 2


async def test_groups_are_capped_at_max_group() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[int, str] = GroupCommit("t-cap", rec.run, max_group=3, max_in_flight=1)
    waiting = [asyncio.create_task(group.submit(i)) for i in range(8)]
    await asyncio.sleep(0.01)
    rec.release.set()
    await asyncio.gather(*waiting)
    assert rec.groups == [[0], [1, 2, 3], [4, 5, 6], [7]]


async def test_each_item_hears_its_own_error() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[int, str] = GroupCommit("t-errors", rec.run, max_in_flight=1)
    first = asyncio.create_task(group.submit(0))
    bad = asyncio.create_task(group.submit(-1))
    good = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0.01)
    rec.release.set()
    assert await first == "done 0"
    with pytest.raises(ValueError, match="bad -1"):
        await bad
    assert await good == "done 2"
    assert rec.groups == [[0], [-1, 2]]


async def test_a_failed_group_fails_every_item_and_later_groups_still_run() -> None:
    calls = 0

    async def run(items: Sequence[int]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.01)
            raise RuntimeError("connection lost")
        return [f"done {i}" for i in items]

    group: GroupCommit[int, str] = GroupCommit("t-fail", run, max_in_flight=1)
    first = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="connection lost"):
        await first
    assert await group.submit(2) == "done 2"


async def test_a_group_answering_the_wrong_number_of_results_fails_loudly() -> None:
    async def run(items: Sequence[int]) -> list[str | BaseException]:
        return []

    group: GroupCommit[int, str] = GroupCommit("t-short", run)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await group.submit(1)


async def test_a_caller_gone_before_its_group_started_is_dropped() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[int, str] = GroupCommit("t-cancel", rec.run, max_in_flight=1)
    first = asyncio.create_task(group.submit(1))
    gone = asyncio.create_task(group.submit(2))
    kept = asyncio.create_task(group.submit(3))
    await asyncio.sleep(0.01)
    gone.cancel()
    rec.release.set()
    assert await first == "done 1"
    assert await kept == "done 3"
    assert rec.groups == [[1], [3]]


def test_bad_limits_are_refused() -> None:
    async def run(items: Sequence[int]) -> list[str | BaseException]:
        return []

    with pytest.raises(ValueError):
        GroupCommit("t-bad", run, max_group=0)


async def test_a_group_runs_in_its_first_items_context() -> None:
    import contextvars

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    seen: list[str] = []
    release = asyncio.Event()

    async def run(items: Sequence[int]) -> list[str | BaseException]:
        seen.append(who.get())
        await release.wait()
        return [str(i) for i in items]

    group: GroupCommit[int, str] = GroupCommit("t-context", run, max_in_flight=1)

    def submit(name: str, item: int) -> asyncio.Task[str]:
        who.set(name)
        return asyncio.create_task(group.submit(item))

    tasks = [submit("first", 1), submit("second", 2), submit("third", 3)]
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*tasks)
    # The second group started when the first finished, yet runs as its own first item.
    assert seen == ["first", "second"]
