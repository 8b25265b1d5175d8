"""Pure campaign rules: validation and normalisation of a new campaign. No I/O."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from crm.marketing.v1 import campaign_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.money import CURRENCY_CODE_RE, parse_amount
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text, iso_date

MAX_NAME = 200
# REST names channels without the enum prefix: EMAIL, SMS, EVENT, SOCIAL.
CHANNELS = enum_by_short_name(campaign_pb2.CampaignChannel)


@dataclass(frozen=True)
class NewCampaign:
    name: str
    channel: int
    budget: Decimal
    currency: str
    start_date: date
    end_date: date


def _date(raw: str, field: str, violations: list[FieldViolation]) -> date | None:
    raw = raw.strip()
    if not raw:
        violations.append(FieldViolation(field, "required"))
        return None
    with contextlib.suppress(ValueError):
        return iso_date(raw)
    violations.append(FieldViolation(field, "a date as YYYY-MM-DD"))
    return None


def validate_new_campaign(
    *,
    name: str,
    channel: int | str,
    currency_code: str,
    amount: Decimal | str,
    start_date: str,
    end_date: str,
) -> NewCampaign:
    """Collects every violation at once, so a client fixes a form in one round trip.
    ``channel`` is a REST name or a gRPC enum number; ``amount`` the REST decimal string or
    the Decimal of a gRPC Money."""
    violations: list[FieldViolation] = []
    name = clean_text(name)
    if not name:
        violations.append(FieldViolation("name", "required"))
    elif len(name) > MAX_NAME:
        violations.append(FieldViolation("name", f"at most {MAX_NAME} characters"))
    channel = parse_enum(channel, CHANNELS, "channel", violations)
    currency = currency_code.strip().upper()
    if not currency:
        violations.append(FieldViolation("budget.currency_code", "required"))
    elif not CURRENCY_CODE_RE.fullmatch(currency):
        violations.append(FieldViolation("budget.currency_code", "an ISO 4217 code: 3 letters"))
    budget = parse_amount(amount, "budget", violations)
    start = _date(start_date, "start_date", violations)
    end = _date(end_date, "end_date", violations)
    if start is not None and end is not None and end < start:
        violations.append(FieldViolation("end_date", "must not be before start_date"))
    if violations or start is None or end is None:
        raise InvalidArgument.from_violations(violations, reason="CAMPAIGN_INVALID")
    return NewCampaign(
        name=name,
        channel=channel,
        budget=budget,
        currency=currency,
        start_date=start,
        end_date=end,
    )
