"""Conversion use cases for both transports: start (optionally waiting for the end) and
read (optionally long-polling)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

from crm_leads.conversion import rules, service
from crm_leads.conversion.waiters import POLL_SECONDS, ConversionWaiters
from crm_platform.auth import Principal
from crm_platform.db import Database


async def convert(
    db: Database,
    waiters: ConversionWaiters,
    principal: Principal,
    *,
    lead_id: uuid.UUID,
    options: rules.Options,
    step_timeout: timedelta,
    wait_seconds: float,
) -> tuple[Any, bool]:
    async with db.unit_of_work() as conn:
        row, started = await service.start(
            conn=conn,
            principal=principal,
            lead_id=lead_id,
            options=options,
            step_timeout=step_timeout,
        )
    if wait_seconds > 0 and row.state not in rules.ENDED:
        row = await get(db, waiters, principal, row.id, wait_seconds)
    return row, started


async def get(
    db: Database,
    waiters: ConversionWaiters,
    principal: Principal,
    conversion_id: uuid.UUID,
    wait_seconds: float = 0.0,
) -> Any:
    """The conversion now, or once it has ended if that is within ``wait_seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    with waiters.watch(str(conversion_id)) as ended:
        while True:
            # Cleared before the read: a NOTIFY after it is never missed.
            ended.clear()
            async with db.read() as conn:
                row = await service.get_visible(
                    conn=conn, principal=principal, conversion_id=conversion_id
                )
            remaining = deadline - loop.time()
            if row.state in rules.ENDED or remaining <= 0:
                return row
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), min(remaining, POLL_SECONDS))
