"""Lead pools (公海). A lead is in its owner org unit's pool while it is open and nobody holds
it (``assignee_id`` NULL); a user who claims it holds it privately until it is released. The
pool a caller sees is the open, unheld leads of its subtree (the shared visibility rule).

Like crm_leads.lead.service, keyword-only functions taking the connection; they never commit.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.lead import hooks
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.lead.service import PRODUCER
from crm_leads.poolrules import service as poolrules
from crm_leads.poolrules.rules import pool_full
from crm_platform import records
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, ROLE_REP, Principal, visible_to
from crm_platform.errors import FailedPrecondition, PermissionDenied, invalid
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

GRADES = ("A", "B", "C", "D")
# Who works a pool; viewers and integrations (API keys) only read.
POOL_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER, ROLE_REP})
# Pool administrators: may take back any lead of their subtree's pools.
TAKE_BACK_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER})


@dataclass(frozen=True)
class PoolFilter:
    grades: tuple[str, ...] = ()
    source: str = ""
    province: str = ""
    city: str = ""
    # Age in whole days since capture: 0 is the first 24 hours.
    min_age_days: int | None = None
    max_age_days: int | None = None

    def __post_init__(self) -> None:
        bad = [g for g in self.grades if g not in GRADES]
        if bad:
            raise invalid("grade", f"must be one of {', '.join(GRADES)}, not {bad[0]!r}")
        low, high = self.min_age_days, self.max_age_days
        if low is not None and high is not None and low > high:
            raise invalid("max_age_days", "must not be less than min_age_days")

    def key(self) -> str:
        """Binds page tokens to this filter (and to the pool: not valid for other lists)."""
        return "pool:" + json.dumps(asdict(self), sort_keys=True)


def user_id(principal: Principal) -> uuid.UUID:
    """The caller as an assignee. Only users hold leads: an API key's subject is not a user
    id (``apikey:…``), so it is refused even if its roles would allow the call."""
    principal.require_any(POOL_ROLES)
    try:
        return uuid.UUID(principal.subject)
    except ValueError:
        raise PermissionDenied("only users can hold leads", reason="USER_REQUIRED") from None


def _days_ago(days: int) -> sa.ColumnElement[Any]:
    return sa.func.now() - sa.func.make_interval(0, 0, 0, days)


async def pool_page(
    *, conn: AsyncConnection, principal: Principal, flt: PoolFilter, page: PageRequest
) -> list[Any]:
    """Open, unheld leads of the caller's subtree matching ``flt``, newest first, keyset-paged
    (size+1 rows for ``page_of``)."""
    stmt = sa.select(leads).where(
        visible_to(leads, principal),
        leads.c.assignee_id.is_(None),
        leads.c.status.in_(OPEN_STATUSES),
    )
    if flt.grades:
        stmt = stmt.where(leads.c.grade.in_(flt.grades))
    for column, value in (
        (leads.c.source, flt.source),
        (leads.c.province, flt.province),
        (leads.c.city, flt.city),
    ):
        if value:
            stmt = stmt.where(column == value)
    if flt.min_age_days is not None:
        stmt = stmt.where(leads.c.create_time <= _days_ago(flt.min_age_days))
    if flt.max_age_days is not None:
        stmt = stmt.where(leads.c.create_time > _days_ago(flt.max_age_days + 1))
    if page.after is not None:
        stmt = stmt.where(leads.c.id < page.after)
    stmt = stmt.order_by(leads.c.id.desc()).limit(page.size + 1)
    return list((await conn.execute(stmt)).all())


async def mine_page(*, conn: AsyncConnection, principal: Principal, page: PageRequest) -> list[Any]:
    """The caller's held open leads, newest first, keyset-paged."""
    stmt = sa.select(leads).where(
        visible_to(leads, principal),
        leads.c.assignee_id == user_id(principal),
        leads.c.status.in_(OPEN_STATUSES),
    )
    if page.after is not None:
        stmt = stmt.where(leads.c.id < page.after)
    stmt = stmt.order_by(leads.c.id.desc()).limit(page.size + 1)
    return list((await conn.execute(stmt)).all())


async def claim(*, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID) -> Any:
    """Take a lead of the caller's pool. The conditional UPDATE is the race guard: of two
    concurrent claims the second waits on the row lock, re-checks ``assignee_id IS NULL``
    against the committed row and matches nothing.

    Pool rules: a rep holding the tenant's ``private_pool_cap`` open leads is refused
    (PRIVATE_POOL_FULL), and so is a rep re-claiming a lead they released or lost within
    ``reclaim_cooldown_hours`` (COOLDOWN_ACTIVE, naming when it ends)."""
    me = user_id(principal)
    visible = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    limits = await poolrules.limits(conn=conn, tenant_id=principal.tenant_id)
    await poolrules.check_cooldown(conn=conn, lead_id=visible.id, user_id=me, limits=limits)
    # Locked per holder: two concurrent claims by one rep cannot both take the last place.
    await poolrules.lock_holders(conn=conn, user_ids=[me])
    held = await poolrules.held_counts(conn=conn, tenant_id=principal.tenant_id, user_ids=[me])
    if held[me] >= limits.cap:
        raise pool_full(me, limits)
    row = (
        await conn.execute(
            leads.update()
            .where(
                leads.c.id == visible.id,
                leads.c.assignee_id.is_(None),
                leads.c.status.in_(OPEN_STATUSES),
            )
            .values(
                assignee_id=me,
                assigned_time=sa.func.now(),
                version=leads.c.version + 1,
                update_time=sa.func.now(),
            )
            .returning(*leads.c)
        )
    ).first()
    if row is None:
        raise FailedPrecondition(
            f"lead {lead_id} is not in a pool (held or not open)",
            reason="LEAD_NOT_IN_POOL",
            metadata={"lead": str(lead_id)},
        )
    await hooks.assigned(conn, [row])
    await _event(
        conn,
        row,
        "crm.leads.lead.claimed.v1",
        events_pb2.LeadClaimed(lead=lead_to_proto(row), assignee_id=str(me)),
    )
    return row


async def release(*, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID) -> Any:
    """Return a held lead to its owner unit's pool: by its holder, or taken back by a manager
    or administrator whose subtree contains it (visibility already guarantees that)."""
    me = user_id(principal)
    visible = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    # Locked, so a release cannot interleave with another release of the same lead.
    current = (
        await conn.execute(sa.select(leads).where(leads.c.id == visible.id).with_for_update())
    ).one()
    if current.assignee_id is None:
        raise FailedPrecondition(
            f"lead {lead_id} is not held by anyone",
            reason="LEAD_NOT_CLAIMED",
            metadata={"lead": str(lead_id)},
        )
    if current.assignee_id != me and not principal.roles & TAKE_BACK_ROLES:
        raise PermissionDenied(
            f"lead {lead_id} is held by another user", reason="LEAD_HELD_BY_OTHER"
        )
    if current.status not in OPEN_STATUSES:
        # A pool holds only open leads: a converted or closed lead keeps its last holder.
        raise FailedPrecondition(
            f"lead {lead_id} is not open", reason="LEAD_NOT_OPEN", metadata={"lead": str(lead_id)}
        )
    row = (
        await conn.execute(
            leads.update()
            .where(leads.c.id == current.id)
            .values(
                assignee_id=None,
                assigned_time=None,
                version=leads.c.version + 1,
                update_time=sa.func.now(),
            )
            .returning(*leads.c)
        )
    ).one()
    # The holder released or lost it: the cool-down starts for them.
    await poolrules.record_releases(
        conn=conn,
        tenant_id=row.tenant_id,
        pairs=[(row.id, current.assignee_id)],
        reason="released" if current.assignee_id == me else "taken_back",
    )
    await _event(
        conn,
        row,
        "crm.leads.lead.released.v1",
        events_pb2.LeadReleased(
            lead=lead_to_proto(row),
            previous_assignee_id=str(current.assignee_id),
            by=str(me),
        ),
    )
    return row


async def _event(conn: AsyncConnection, row: Any, event_type: str, payload: Any) -> None:
    await add_event(
        conn,
        event_type=event_type,
        payload=payload,
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )
