"""Acceptance by the receiving unit: who may decide, and the fixed rejection reasons. No I/O."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal
from crm_platform.http import ApiModel

ReasonCode = Literal["OUT_OF_TERRITORY", "NO_CAPACITY", "DUPLICATE", "INVALID_CONTACT", "OTHER"]
EXPIRED = "EXPIRED"  # the reason code of a deadline that passed
DECIDER_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER})

# lead_rejections.kind and the owner-history reason of the move back to the parent.
REJECTED = "rejected"
EXPIRED_KIND = "expired"
RECLAIMED = "reclaimed"


class RejectIn(ApiModel):
    reason_code: ReasonCode
    note: str = Field(default="", max_length=1000)


def deadline(offer_time: datetime, acceptance_hours: int) -> datetime:
    return offer_time + timedelta(hours=acceptance_hours)


def decides_for(principal: Principal, unit_id: object) -> bool:
    """Managers decide for their own unit; tenant administrators for any unit they see (the
    caller has already been shown the lead, so it is in their subtree)."""
    if ROLE_ADMIN in principal.roles:
        return True
    return ROLE_MANAGER in principal.roles and principal.org_unit_id == unit_id
