"""Pure opportunity rules: validation and normalisation of a new opportunity. No I/O."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from crm.sales.v1 import opportunity_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.ids import parse_id
from crm_platform.validation import clean_text

MAX_TITLE = 200
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# [0-9], not \d: \d also matches full-width and other Unicode digits.
ISO_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
CENT = Decimal("0.01")
# NUMERIC(18,2) holds 16 digits before the decimal point.
AMOUNT_LIMIT = Decimal(10) ** 16
MAX_NANOS = 999_999_999
DEFAULT_STAGE = opportunity_pb2.OPPORTUNITY_STAGE_QUALIFICATION
# REST names stages without the enum prefix: QUALIFICATION, PROPOSAL, WON, ...
STAGES: dict[str, int] = {
    name.removeprefix("OPPORTUNITY_STAGE_"): value
    for name, value in opportunity_pb2.OpportunityStage.items()
    if value != opportunity_pb2.OPPORTUNITY_STAGE_UNSPECIFIED
}

# A decimal string (REST), Money's (units, nanos) (gRPC), or None when no amount was sent.
AmountIn = str | tuple[int, int] | None


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


def _optional_id(raw: str, field: str, violations: list[FieldViolation]) -> uuid.UUID | None:
    raw = clean_text(raw)
    try:
        return parse_id(raw, field) if raw else None
    except InvalidArgument as exc:
        violations.extend(exc.violations)
        return None


def _decimal_amount(raw: str, violations: list[FieldViolation]) -> Decimal | None:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        violations.append(FieldViolation("amount.amount", "not a decimal number"))
        return None
    if not value.is_finite():
        violations.append(FieldViolation("amount.amount", "must be a finite number"))
        return None
    return value


def _money_amount(units: int, nanos: int, violations: list[FieldViolation]) -> Decimal | None:
    if not -MAX_NANOS <= nanos <= MAX_NANOS or units * nanos < 0:
        violations.append(
            FieldViolation("amount.nanos", "within ±999999999 and of the same sign as units")
        )
        return None
    return Decimal(units) + Decimal(nanos).scaleb(-9)


def _amount(raw: AmountIn, violations: list[FieldViolation]) -> Decimal:
    """The amount, which must be whole cents; violations name the field the client
    used (REST: amount.amount, gRPC: amount.units / amount.nanos)."""
    if raw is None:
        violations.append(FieldViolation("amount", "required"))
        return Decimal(0)
    if isinstance(raw, str):
        value = _decimal_amount(raw, violations)
        size_field = cents_field = "amount.amount"
    else:
        value = _money_amount(*raw, violations)
        size_field, cents_field = "amount.units", "amount.nanos"
    if value is None:
        return Decimal(0)
    if value < 0:
        violations.append(FieldViolation(size_field, "must not be negative"))
    elif value >= AMOUNT_LIMIT:
        violations.append(FieldViolation(size_field, "at most 16 digits before the point"))
    elif value != value.quantize(CENT):
        violations.append(FieldViolation(cents_field, "at most 2 decimal places"))
    else:
        return abs(value.quantize(CENT))  # abs: "-0" is a valid zero, stored as 0.00
    return Decimal(0)


def _stage(raw: int | str, violations: list[FieldViolation]) -> int:
    """REST sends a name ("" = default), gRPC an enum number (UNSPECIFIED = default); proto3
    enums are open, so a number can still be one no stage has."""
    if raw in ("", opportunity_pb2.OPPORTUNITY_STAGE_UNSPECIFIED):
        return DEFAULT_STAGE
    stage = STAGES.get(clean_text(raw), -1) if isinstance(raw, str) else raw
    if stage not in STAGES.values():
        violations.append(FieldViolation("stage", f"one of {', '.join(STAGES)}"))
    return stage


def _close_date(raw: str, violations: list[FieldViolation]) -> date | None:
    raw = clean_text(raw)
    if not raw:
        return None
    try:
        if not ISO_DATE_RE.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        violations.append(FieldViolation("close_date", "a calendar date as YYYY-MM-DD"))
        return None


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
    if amount is not None and not CURRENCY_RE.fullmatch(currency_code):
        violations.append(
            FieldViolation("amount.currency_code", "an ISO 4217 code of 3 upper-case letters")
        )
    new = NewOpportunity(
        title=title,
        customer_id=_optional_id(customer_id, "customer_id", violations),
        contact_id=_optional_id(contact_id, "contact_id", violations),
        lead_id=_optional_id(lead_id, "lead_id", violations),
        amount=_amount(amount, violations),
        currency=currency_code,
        stage=_stage(stage, violations),
        close_date=_close_date(close_date, violations),
    )
    if violations:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            reason="OPPORTUNITY_INVALID",
            violations=violations,
        )
    return new
