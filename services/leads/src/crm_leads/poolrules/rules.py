"""Pool rules (公海/私池): a rep's private-pool cap and the reclaim cool-down. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crm_leads.tenantsettings.rules import (
    DEFAULT_PRIVATE_POOL_CAP,
    DEFAULT_RECLAIM_COOLDOWN_HOURS,
    LeadSettings,
)
from crm_platform.errors import FailedPrecondition


@dataclass(frozen=True)
class PoolLimits:
    cap: int = DEFAULT_PRIVATE_POOL_CAP
    cooldown_hours: int = DEFAULT_RECLAIM_COOLDOWN_HOURS


def limits_of(settings: LeadSettings) -> PoolLimits:
    """The tenant's limits; a setting it never chose is the default (0 hours is a choice)."""
    hours = settings.reclaim_cooldown_hours
    return PoolLimits(
        cap=settings.private_pool_cap or DEFAULT_PRIVATE_POOL_CAP,
        cooldown_hours=DEFAULT_RECLAIM_COOLDOWN_HOURS if hours is None else hours,
    )


def cooldown_end(release_time: datetime, limits: PoolLimits) -> datetime:
    return release_time + timedelta(hours=limits.cooldown_hours)


def pool_full(user_id: object, limits: PoolLimits) -> FailedPrecondition:
    return FailedPrecondition(
        f"user {user_id} already holds {limits.cap} open leads, the private pool cap",
        reason="PRIVATE_POOL_FULL",
        metadata={"user": str(user_id), "cap": str(limits.cap)},
    )


def cooldown_active(lead_id: object, until: datetime) -> FailedPrecondition:
    return FailedPrecondition(
        f"lead {lead_id} was released or lost by this user recently; it can be claimed "
        f"again from {until.isoformat()}",
        reason="COOLDOWN_ACTIVE",
        metadata={"lead": str(lead_id), "until": until.isoformat()},
    )
