"""Pure campaign rules: validation and normalisation of a new campaign. No I/O."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from crm.marketing.v1 import campaign_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.validation import clean_text

MAX_NAME = 200
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# date.fromisoformat also takes 20260101 and week dates; the API promises YYYY-MM-DD only.
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# The budget column is NUMERIC(18,2): 16 digits before the point, 2 after.
MAX_BUDGET = Decimal("1e16")
CENT = Decimal("0.01")
CHANNELS: dict[str, campaign_pb2.CampaignChannel.ValueType] = {
    "EMAIL": campaign_pb2.CAMPAIGN_CHANNEL_EMAIL,
    "SMS": campaign_pb2.CAMPAIGN_CHANNEL_SMS,
    "EVENT": campaign_pb2.CAMPAIGN_CHANNEL_EVENT,
    "SOCIAL": campaign_pb2.CAMPAIGN_CHANNEL_SOCIAL,
}


@dataclass(frozen=True)
class NewCampaign:
    name: str
    channel: int
    budget: Decimal
    currency: str
    start_date: date
    end_date: date


def channel_from_name(name: str) -> campaign_pb2.CampaignChannel.ValueType:
    """REST spells channels EMAIL / SMS / EVENT / SOCIAL; any other name maps to UNSPECIFIED,
    which validation reports, so a bad channel arrives with the request's other violations."""
    return CHANNELS.get(name, campaign_pb2.CAMPAIGN_CHANNEL_UNSPECIFIED)


def _amount(raw: Decimal | str, violations: list[FieldViolation]) -> Decimal:
    field = "budget.amount"
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        violations.append(FieldViolation(field, "not a decimal number"))
        return Decimal(0)
    if not amount.is_finite():
        violations.append(FieldViolation(field, "not a decimal number"))
    elif amount < 0:
        violations.append(FieldViolation(field, "must not be negative"))
    elif amount >= MAX_BUDGET:
        violations.append(FieldViolation(field, "at most 16 digits before the decimal point"))
    elif amount != amount.quantize(CENT):
        # Rejected rather than rounded: a budget is money the client meant exactly.
        violations.append(FieldViolation(field, "at most 2 decimal places"))
    return amount


def _date(raw: str, field: str, violations: list[FieldViolation]) -> date | None:
    raw = raw.strip()
    if not raw:
        violations.append(FieldViolation(field, "required"))
        return None
    if DATE_RE.fullmatch(raw):
        # The right shape can still be no day at all (2026-02-30).
        with contextlib.suppress(ValueError):
            return date.fromisoformat(raw)
    violations.append(FieldViolation(field, "a date as YYYY-MM-DD"))
    return None


def validate_new_campaign(
    *,
    name: str,
    channel: int,
    currency_code: str,
    amount: Decimal | str,
    start_date: str,
    end_date: str,
) -> NewCampaign:
    """Collects every violation at once, so a client fixes a form in one round trip.
    ``amount`` is the REST decimal string or the Decimal of a gRPC Money."""
    violations: list[FieldViolation] = []
    name = clean_text(name)
    if not name:
        violations.append(FieldViolation("name", "required"))
    elif len(name) > MAX_NAME:
        violations.append(FieldViolation("name", f"at most {MAX_NAME} characters"))
    if channel not in CHANNELS.values():
        violations.append(FieldViolation("channel", "must be EMAIL, SMS, EVENT or SOCIAL"))
    currency = currency_code.strip().upper()
    if not currency:
        violations.append(FieldViolation("budget.currency_code", "required"))
    elif not CURRENCY_RE.fullmatch(currency):
        violations.append(FieldViolation("budget.currency_code", "an ISO 4217 code: 3 letters"))
    budget = _amount(amount, violations)
    start = _date(start_date, "start_date", violations)
    end = _date(end_date, "end_date", violations)
    if start is not None and end is not None and end < start:
        violations.append(FieldViolation("end_date", "must not be before start_date"))
    if violations or start is None or end is None:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            reason="CAMPAIGN_INVALID",
            violations=violations,
        )
    return NewCampaign(
        name=name,
        channel=channel,
        budget=budget,
        currency=currency,
        start_date=start,
        end_date=end,
    )
