"""SLA alerts, the inbox of the SLA timers: whom a reminder or an escalation is addressed
to, and which alerts a caller reads. No I/O.

- a **warning** (reminder, fired with ``lead.sla_warning``) goes to the lead's holder, or to
  the managers of its owner unit when nobody holds it;
- a **breach** (escalation, fired with ``lead.sla_breached``) goes to the managers of the
  lead's owner unit (the event's ``escalate_to_role``/``escalate_to_org_id``).

Managers and administrators read every alert of their subtree (the owner path prefix, as
for leads); anyone else reads the reminders addressed to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal

AlertKind = Literal["warning", "breach"]
AlertState = Literal["open", "resolved"]
WARNING: AlertKind = "warning"
BREACH: AlertKind = "breach"
# An alert addressed to no user is for this role at the lead's owner unit.
ESCALATION_ROLE = ROLE_MANAGER
SUBTREE_READERS = frozenset({ROLE_MANAGER, ROLE_ADMIN})


def recipient(kind: AlertKind, assignee_id: uuid.UUID | None) -> uuid.UUID | None:
    """The user an alert is addressed to; None: the owner unit's managers."""
    return assignee_id if kind == WARNING else None


def reads_subtree(principal: Principal) -> bool:
    return bool(principal.roles & SUBTREE_READERS)


def addressee(principal: Principal) -> uuid.UUID | None:
    """The user whose reminders the caller reads; None: not a user (an API key), so none."""
    try:
        return uuid.UUID(principal.subject)
    except ValueError:
        return None


@dataclass(frozen=True)
class AlertFilter:
    kind: AlertKind | None = None
    state: AlertState | None = None

    def key(self) -> str:
        """What a page token is bound to: a token of another filter is refused, never
        answered with a silently wrong page."""
        return f"sla-alerts:{self.kind or ''}:{self.state or ''}"
