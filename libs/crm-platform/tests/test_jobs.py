"""Periodic jobs (crm_platform.runtime.run_periodically)."""

from __future__ import annotations

import asyncio

import pytest

from crm_platform.runtime import PeriodicJob, run_periodically


async def test_a_job_runs_at_once_then_every_interval_and_survives_failures() -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("database unavailable")

    task = asyncio.create_task(run_periodically(PeriodicJob("flaky", 0.01, flaky)))
    await asyncio.sleep(0)
    assert runs == 1  # the first run starts before the first interval
    for _ in range(100):
        if runs >= 3:
            break
        await asyncio.sleep(0.01)
    assert runs >= 3  # the failed run did not stop it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
