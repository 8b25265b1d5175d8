"""What else happens, in the same transaction, when leads are given to a rep (a claim, a
manual assignment or an assignment run).

The same shape as ``crm_leads.activities.hooks``: the SLA package reacts to assignments
without the pool and assignment code importing it (it imports them). Hooks are appended at
wiring time and awaited in order inside the caller's unit of work, after the leads' UPDATE;
an exception fails the whole request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

# (conn, rows): the leads as updated (RETURNING), locked by the caller, each with its
# assignee_id and assigned_time set; whatever a hook returns is ignored.
AssignedHook = Callable[[AsyncConnection, Sequence[Any]], Awaitable[object]]

ASSIGNED_HOOKS: list[AssignedHook] = []


async def assigned(conn: AsyncConnection, rows: Sequence[Any]) -> None:
    if not rows:
        return
    for hook in ASSIGNED_HOOKS:
        await hook(conn, rows)
