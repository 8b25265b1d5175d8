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


@dataclass(frozen=True)
class Reported:
    """An order or activity an event reported about a customer."""

    won_order: bool
    occurred_at: datetime


@dataclass(frozen=True)
class Tally:
    """A customer's facts as stored: the stage is derived from them (``stage``)."""

    won_orders: int = 0
    last_order_time: datetime | None = None
    last_activity_time: datetime | None = None

    def add(self, reported: Reported) -> Tally:
        # max, not the latest: a late, older event never moves times back.
        at = reported.occurred_at
        return Tally(
            self.won_orders + (1 if reported.won_order else 0),
            _later(self.last_order_time, at) if reported.won_order else self.last_order_time,
            _later(self.last_activity_time, at),
        )


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


@dataclass(frozen=True)
class Move:
    from_stage: str
    to_stage: str
    reason: str
    report: int  # index of the report that made it


def fold(
    stage_now: str,
    tally: Tally,
    reported: list[Reported],
    *,
    now: datetime,
    thresholds: Thresholds,
) -> tuple[Tally, list[Move]]:
    """Apply a customer's reports in order: the final facts and every stage change they
    make, exactly as one report at a time would."""
    moves: list[Move] = []
    for i, report in enumerate(reported):
        tally = tally.add(report)
        facts = Facts(tally.won_orders, tally.last_activity_time)
        target = stage(facts, now=now, thresholds=thresholds)
        if target != stage_now:
            why = (
                REASON_INACTIVITY
                if target in INACTIVE_STAGES
                else reason(won_order=report.won_order)
            )
            moves.append(Move(stage_now, target, why, i))
            stage_now = target
    return tally, moves
