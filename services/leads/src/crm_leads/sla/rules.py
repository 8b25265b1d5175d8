"""A tenant's lead SLA policy (acceptance deadline, follow-up targets by grade, reminders,
protection periods) and the pure arithmetic of a lead's follow-up clock. No I/O.

The clock of a lead starts when the unit it was distributed to accepts it:

- **first contact** is due ``first_contact_hours[grade]`` after the start; the first logged
  follow-up meets it, and from then on each follow-up makes the next one due
  ``follow_up_hours[grade]`` later;
- a **reminder** (``sla_warning``) fires ``reminder_minutes`` before each target, and the
  **breach** (``sla_breached``, escalated to the unit's managers) at the target;
- the unit keeps the lead for ``protection_hours`` after the start; a follow-up extends that
  to ``extension_hours`` after it, never past ``max_protection_hours`` after the start. When
  the protection ends the lead is **reclaimed** (公海回收) to the parent unit's pool."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from crm_platform.errors import FieldViolation, InvalidArgument, loc_to_field
from crm_platform.validation import InputModel

Grade = Literal["A", "B", "C", "D"]
GRADES: tuple[Grade, ...] = ("A", "B", "C", "D")
MAX_HOURS = 24 * 365

# Timer kinds (lead_timers.kind).
ACCEPTANCE_DEADLINE = "acceptance_deadline"
FIRST_CONTACT_DUE = "first_contact_due"
FOLLOW_UP_DUE = "follow_up_due"
REMINDER = "reminder"
RECLAIM = "reclaim"
# Kinds a lead's follow-up clock owns (re-armed together on a follow-up).
CLOCK_KINDS = (FIRST_CONTACT_DUE, FOLLOW_UP_DUE, REMINDER, RECLAIM)

Hours = Annotated[int, Field(ge=1, le=MAX_HOURS)]


class ByGrade(InputModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    A: Hours
    B: Hours
    C: Hours
    D: Hours

    def of(self, grade: str) -> int:
        # An unknown grade (none today) is treated as the lowest.
        value: int = getattr(self, grade if grade in GRADES else "D")
        return value


class SlaPolicy(InputModel):
    """The tenant's document (``PUT /v1/sla-policy``); every field has a default."""

    # Strict and closed: a misspelt key must be an error, not a policy that silently differs.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    acceptance_hours: int = Field(
        default=24, ge=1, le=24 * 30, description="Time a unit has to accept a distributed lead."
    )
    first_contact_hours: ByGrade = Field(
        default=ByGrade(A=2, B=8, C=24, D=72),
        description="Time from acceptance to the first logged follow-up, by grade.",
    )
    follow_up_hours: ByGrade = Field(
        default=ByGrade(A=24, B=72, C=168, D=336),
        description="Longest gap between follow-ups, by grade.",
    )
    reminder_minutes: int = Field(
        default=60, ge=0, le=7 * 24 * 60, description="Warn this long before a target; 0: never."
    )
    reclaim: bool = Field(default=True, description="Reclaim leads when protection ends.")
    protection_hours: int = Field(default=7 * 24, ge=1, le=MAX_HOURS)
    max_protection_hours: int = Field(default=30 * 24, ge=1, le=MAX_HOURS)
    extension_hours: int = Field(
        default=7 * 24,
        ge=0,
        le=MAX_HOURS,
        description="A follow-up protects until this long after it.",
    )

    @model_validator(mode="after")
    def _max_covers_default(self) -> SlaPolicy:
        if self.max_protection_hours < self.protection_hours:
            raise ValueError("max_protection_hours must not be less than protection_hours")
        return self


DEFAULT_POLICY = SlaPolicy()


def parse_policy(document: object) -> SlaPolicy:
    """The validated policy, or InvalidArgument naming every bad field by its path."""
    try:
        return SlaPolicy.model_validate(document)
    except ValidationError as exc:
        violations = []
        for e in exc.errors():
            field = loc_to_field(e["loc"])
            if field == "body" and "max_protection_hours" in e["msg"]:
                field = "max_protection_hours"
            message = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
            violations.append(FieldViolation(field, message))
        raise InvalidArgument.from_violations(violations, reason="SLA_POLICY_INVALID") from None


def policy_json(policy: SlaPolicy) -> dict[str, Any]:
    return policy.model_dump(mode="json")


@dataclass(frozen=True)
class Timer:
    kind: str
    due: datetime
    payload: dict[str, str]


@dataclass(frozen=True)
class Clock:
    """A lead's follow-up state at its unit (lead_sla's columns)."""

    grade: str
    start: datetime
    first_contact_due: datetime
    first_contact_time: datetime | None = None
    follow_up_due: datetime | None = None
    last_follow_up_time: datetime | None = None
    protect_until: datetime | None = None
    protect_max: datetime | None = None


def _hours(n: int) -> timedelta:
    return timedelta(hours=n)


def start_clock(policy: SlaPolicy, grade: str, start: datetime) -> Clock:
    """The clock of a lead accepted (or assigned) at ``start``."""
    reclaiming = policy.reclaim
    return Clock(
        grade=grade,
        start=start,
        first_contact_due=start + _hours(policy.first_contact_hours.of(grade)),
        protect_until=start + _hours(policy.protection_hours) if reclaiming else None,
        protect_max=start + _hours(policy.max_protection_hours) if reclaiming else None,
    )


def extended_protection(
    policy: SlaPolicy, protect_until: datetime, protect_max: datetime, at: datetime
) -> datetime:
    """Protection after a follow-up at ``at``: ``extension_hours`` after it if that is later
    than now, never past the maximum, and never shortened."""
    return min(max(protect_until, at + _hours(policy.extension_hours)), protect_max)


def follow_up(policy: SlaPolicy, clock: Clock, at: datetime) -> Clock:
    """The clock after a follow-up logged at ``at`` (the first one is the first contact)."""
    protect_until = clock.protect_until
    if protect_until is not None and clock.protect_max is not None:
        protect_until = extended_protection(policy, protect_until, clock.protect_max, at)
    return Clock(
        grade=clock.grade,
        start=clock.start,
        first_contact_due=clock.first_contact_due,
        first_contact_time=clock.first_contact_time or at,
        follow_up_due=at + _hours(policy.follow_up_hours.of(clock.grade)),
        last_follow_up_time=at,
        protect_until=protect_until,
        protect_max=clock.protect_max,
    )


def timers(policy: SlaPolicy, clock: Clock, unit_id: str) -> list[Timer]:
    """The timers a clock needs armed: the open target with its reminder, and the reclaim."""
    out: list[Timer] = []
    unit = {"org_unit_id": unit_id}
    if clock.first_contact_time is None:
        target: tuple[str, datetime] | None = (FIRST_CONTACT_DUE, clock.first_contact_due)
    elif clock.follow_up_due is not None:
        target = (FOLLOW_UP_DUE, clock.follow_up_due)
    else:
        target = None
    if target is not None:
        kind, due = target
        out.append(Timer(kind, due, unit))
        if policy.reminder_minutes:
            warn = due - timedelta(minutes=policy.reminder_minutes)
            # Never a reminder for a moment already past when the target was set.
            if warn > (clock.last_follow_up_time or clock.start):
                out.append(Timer(REMINDER, warn, {**unit, "target": kind, "due": due.isoformat()}))
    if clock.protect_until is not None:
        out.append(Timer(RECLAIM, clock.protect_until, unit))
    return out


def target_due(clock: Clock, kind: str) -> datetime | None:
    """When the clock's ``kind`` target is due now (None: met, or not the open target)."""
    if kind == FIRST_CONTACT_DUE:
        return clock.first_contact_due if clock.first_contact_time is None else None
    if kind == FOLLOW_UP_DUE:
        return clock.follow_up_due
    return None
