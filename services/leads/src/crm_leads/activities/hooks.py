"""What else happens, in the same transaction, when a follow-up activity is logged.

Another module reacts to follow-ups without this package importing it: it appends a hook at
wiring time (``FOLLOW_UP_HOOKS.append(on_follow_up)``). Each hook is awaited, in order,
inside the activity's unit of work, after the activity row and its
``crm.leads.lead.followed_up.v1`` event are written: whatever it writes commits (or rolls
back) with them, and an exception it raises fails the whole request."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

# (conn, lead_id, at): ``at`` is the activity's occur_time (timezone-aware); whatever a hook
# returns is ignored.
FollowUpHook = Callable[[AsyncConnection, uuid.UUID, datetime], Awaitable[object]]

FOLLOW_UP_HOOKS: list[FollowUpHook] = []


async def followed_up(conn: AsyncConnection, lead_id: uuid.UUID, at: datetime) -> None:
    for hook in FOLLOW_UP_HOOKS:
        await hook(conn, lead_id, at)
