"""Pure lifecycle rules: the stage a customer's facts put it in. No I/O.

The stage follows the won-order count (0: PROSPECT, 1: CUSTOMER, 2 or more: REPEAT) while
the customer is active. A customer who has ordered and then shows no activity (an
opportunity, a ticket, a lead conversion) for ``at_risk_days`` is AT_RISK, for
``lost_days`` LOST; any new activity or order brings it back to its won-count stage.
Prospects never become at-risk or lost: a customer who never ordered has nothing to lose
(segments on ``last_activity_older_than_days`` cover stale prospects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crm_platform.errors import FieldViolation, InvalidArgument

PROSPECT = "PROSPECT"
CUSTOMER = "CUSTOMER"
REPEAT = "REPEAT"
AT_RISK = "AT_RISK"
LOST = "LOST"
STAGES = (PROSPECT, CUSTOMER, REPEAT, AT_RISK, LOST)
INACTIVE_STAGES = (AT_RISK, LOST)

# Why a stage changed (history rows and CustomerLifecycleChanged.reason).
REASON_ORDER = "order"
REASON_ACTIVITY = "activity"
REASON_INACTIVITY = "inactivity"

DEFAULT_AT_RISK_DAYS = 90
DEFAULT_LOST_DAYS = 365


@dataclass(frozen=True)
class Thresholds:
    at_risk_days: int = DEFAULT_AT_RISK_DAYS
    lost_days: int = DEFAULT_LOST_DAYS

    def __post_init__(self) -> None:
        violations = []
        if self.at_risk_days < 1:
            violations.append(FieldViolation("at_risk_days", "at least 1"))
        if self.lost_days <= self.at_risk_days:
            violations.append(FieldViolation("lost_days", "must be more than at_risk_days"))
        if violations:
            raise InvalidArgument.from_violations(violations, reason="LIFECYCLE_THRESHOLDS_INVALID")

    @property
    def at_risk(self) -> timedelta:
        return timedelta(days=self.at_risk_days)

    @property
    def lost(self) -> timedelta:
        return timedelta(days=self.lost_days)


@dataclass(frozen=True)
class Facts:
    won_orders: int
    last_activity_time: datetime | None


def won_count_stage(won_orders: int) -> str:
    if won_orders <= 0:
        return PROSPECT
    return CUSTOMER if won_orders == 1 else REPEAT


def stage(facts: Facts, *, now: datetime, thresholds: Thresholds) -> str:
    """The stage the facts put a customer in at ``now``."""
    base = won_count_stage(facts.won_orders)
    if base == PROSPECT or facts.last_activity_time is None:
        return base
    idle = now - facts.last_activity_time
    if idle >= thresholds.lost:
        return LOST
    if idle >= thresholds.at_risk:
        return AT_RISK
    return base


def reason(*, won_order: bool) -> str:
    """The reason of a change an event caused."""
    return REASON_ORDER if won_order else REASON_ACTIVITY
