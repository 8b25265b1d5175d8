"""Pure opportunity rules: validation and normalisation of a new opportunity. No I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from crm.common.v1 import money_pb2
from crm.sales.v1 import opportunity_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.ids import parse_optional_id
from crm_platform.money import CURRENCY_CODE_RE, parse_amount
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text, iso_date

MAX_TITLE = 200
MAX_LABEL = 200  # product, campaign
DEFAULT_STAGE = opportunity_pb2.OPPORTUNITY_STAGE_QUALIFICATION
# REST names stages without the enum prefix: QUALIFICATION, PROPOSAL, WON, ...
STAGES = enum_by_short_name(opportunity_pb2.OpportunityStage)

# A decimal string (REST), a Money (gRPC), or None when no amount was sent.
AmountIn = str | money_pb2.Money | None


@dataclass(frozen=True)
class NewOpportunity:
    title: str
    customer_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    lead_id: uuid.UUID | None
    amount: Decimal
    currency: str
    stage: int
    close_date: date | None
    product: str = ""
    campaign: str = ""


def _close_date(raw: str, violations: list[FieldViolation]) -> date | None:
    raw = clean_text(raw)
    if not raw:
        return None
    try:
        return iso_date(raw)
    except ValueError:
        violations.append(FieldViolation("close_date", "a calendar date as YYYY-MM-DD"))
        return None


def _label(raw: str, name: str, violations: list[FieldViolation]) -> str:
    """An optional short text (product, campaign): cleaned, '' when absent."""
    value = clean_text(raw)
    if len(value) > MAX_LABEL:
        violations.append(FieldViolation(name, f"at most {MAX_LABEL} characters"))
    return value


def validate_new_opportunity(
    *,
    title: str,
    customer_id: str,
    contact_id: str,
    lead_id: str,
    currency_code: str,
    amount: AmountIn,
    stage: int | str,
    close_date: str,
    product: str = "",
    campaign: str = "",
) -> NewOpportunity:
    """Collects every violation at once, so a client fixes a form in one round trip."""
    violations: list[FieldViolation] = []
    title = clean_text(title)
    if not title:
        violations.append(FieldViolation("title", "required"))
    elif len(title) > MAX_TITLE:
        violations.append(FieldViolation("title", f"at most {MAX_TITLE} characters"))
    currency_code = clean_text(currency_code)
    # Without an amount there is no currency to check: "amount: required" says it all.
    if amount is not None and not CURRENCY_CODE_RE.fullmatch(currency_code):
        violations.append(
            FieldViolation("amount.currency_code", "an ISO 4217 code of 3 upper-case letters")
        )
    new = NewOpportunity(
        title=title,
        customer_id=parse_optional_id(customer_id, "customer_id", violations),
        contact_id=parse_optional_id(contact_id, "contact_id", violations),
        lead_id=parse_optional_id(lead_id, "lead_id", violations),
        amount=parse_amount(amount, "amount", violations),
        currency=currency_code,
        # REST sends a name ("" = default), gRPC an enum number (UNSPECIFIED = default).
        stage=parse_enum(stage, STAGES, "stage", violations, default=DEFAULT_STAGE),
        close_date=_close_date(close_date, violations),
        product=_label(product, "product", violations),
        campaign=_label(campaign, "campaign", violations),
    )
    if violations:
        raise InvalidArgument.from_violations(violations, reason="OPPORTUNITY_INVALID")
    return new
