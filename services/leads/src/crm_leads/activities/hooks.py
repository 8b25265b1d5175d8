"""What else happens, in the same transaction, when a follow-up activity is logged.

Another module reacts to follow-ups without this package importing it: it appends a hook at
wiring time (``FOLLOW_UP_HOOKS.append(on_follow_up)``). Each hook is awaited, in order,
inside the activity's unit of work, after the activity row and its
``crm.leads.lead.followed_up.v1`` event are written and the lead row is locked (its
``update_time`` moved): whatever it writes commits (or rolls back) with them, and an
exception it raises fails the whole request."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.activities.rules import Kind


@dataclass(frozen=True)
class FollowUp:
    """The activity just logged, as hooks see it."""

    lead_id: uuid.UUID
    activity_id: uuid.UUID
    kind: Kind
    at: datetime  # the activity's occur_time (timezone-aware)


# Whatever a hook returns is ignored.
FollowUpHook = Callable[[AsyncConnection, FollowUp], Awaitable[object]]

FOLLOW_UP_HOOKS: list[FollowUpHook] = []


async def followed_up(conn: AsyncConnection, follow_up: FollowUp) -> None:
    for hook in FOLLOW_UP_HOOKS:
        await hook(conn, follow_up)
