"""Pure conversion rules: validating a conversion request, filling its defaults from the lead,
the opportunities it opens, and the saga's state machine. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from crm.common.v1 import money_pb2
from crm.customers.v1 import customer_pb2
from crm.leads.v1 import conversion_pb2, lead_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.ids import parse_optional_id
from crm_platform.money import CURRENCY_CODE_RE, parse_amount
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text, is_email, iso_date, normalise_phone

CUSTOMER_PENDING = conversion_pb2.CONVERSION_STATE_CUSTOMER_PENDING
OPPORTUNITY_PENDING = conversion_pb2.CONVERSION_STATE_OPPORTUNITY_PENDING
COMPLETED = conversion_pb2.CONVERSION_STATE_COMPLETED
COMPENSATING = conversion_pb2.CONVERSION_STATE_COMPENSATING
FAILED = conversion_pb2.CONVERSION_STATE_FAILED
STATE_NAMES = {
    CUSTOMER_PENDING: "customer_pending",
    OPPORTUNITY_PENDING: "opportunity_pending",
    COMPLETED: "completed",
    COMPENSATING: "compensating",
    FAILED: "failed",
}
# A conversion in these states has not ended: waiting callers keep waiting.
RUNNING = (CUSTOMER_PENDING, OPPORTUNITY_PENDING, COMPENSATING)
ENDED = (COMPLETED, FAILED)
CONVERTIBLE_STATUSES = (lead_pb2.LEAD_STATUS_NEW, lead_pb2.LEAD_STATUS_QUALIFIED)

STEP_CUSTOMER = "customer"
STEP_OPPORTUNITY = "opportunity"
STEP_TIMEOUT = "timeout"
REASON_TIMED_OUT = "CONVERSION_TIMED_OUT"

KINDS = enum_by_short_name(customer_pb2.CustomerKind)
MAX_TEXT = 200
MAX_TAX_ID = 64
MAX_WAIT_SECONDS = 30.0
DEFAULT_CURRENCY = "CNY"
AmountIn = str | money_pb2.Money | None


@dataclass(frozen=True)
class CustomerOptions:
    customer_id: str = ""
    kind: int = 0
    display_name: str = ""
    tax_id: str = ""
    phone: str = ""
    email: str = ""
    province: str = ""
    city: str = ""


@dataclass(frozen=True)
class ContactOptions:
    full_name: str = ""
    title: str = ""
    phone: str = ""
    email: str = ""


@dataclass(frozen=True)
class OpportunityOptions:
    title: str = ""
    # Decimal string, "" when not given (then 0.00).
    amount: str = ""
    currency_code: str = ""
    product: str = ""
    close_date: str = ""


@dataclass(frozen=True)
class Options:
    """A validated conversion request, before the lead's defaults are filled in."""

    customer: CustomerOptions = field(default_factory=CustomerOptions)
    contact: ContactOptions = field(default_factory=ContactOptions)
    opportunity: OpportunityOptions = field(default_factory=OpportunityOptions)
    per_intent: bool = False


@dataclass(frozen=True)
class OpportunitySpec:
    title: str
    amount: str
    currency_code: str
    product: str
    campaign: str
    close_date: str
    lead_intent_id: str


@dataclass(frozen=True)
class Plan:
    """What a conversion asks the customers and sales services to do (defaults filled)."""

    customer: CustomerOptions
    contact: ContactOptions
    opportunity: OpportunityOptions
    per_intent: bool
    opportunities: tuple[OpportunitySpec, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        return cls(
            customer=CustomerOptions(**raw["customer"]),
            contact=ContactOptions(**raw["contact"]),
            opportunity=OpportunityOptions(**raw["opportunity"]),
            per_intent=bool(raw["per_intent"]),
            opportunities=tuple(OpportunitySpec(**o) for o in raw["opportunities"]),
        )


def _text(raw: str, name: str, violations: list[FieldViolation], *, limit: int = MAX_TEXT) -> str:
    value = clean_text(raw)
    if len(value) > limit:
        violations.append(FieldViolation(name, f"at most {limit} characters"))
    return value


def _phone(raw: str, name: str, region: str, violations: list[FieldViolation]) -> str:
    raw = clean_text(raw)
    if not raw:
        return ""
    try:
        return normalise_phone(raw, region)
    except ValueError as exc:
        violations.append(FieldViolation(name, str(exc) or "not a valid phone number"))
        return ""


def _email(raw: str, name: str, violations: list[FieldViolation]) -> str:
    value = clean_text(raw).lower()
    if value and not is_email(value):
        violations.append(FieldViolation(name, "not a valid email address"))
    return value


def _close_date(raw: str, name: str, violations: list[FieldViolation]) -> str:
    value = clean_text(raw)
    if not value:
        return ""
    try:
        return iso_date(value).isoformat()
    except ValueError:
        violations.append(FieldViolation(name, "a calendar date as YYYY-MM-DD"))
        return ""


def validate_options(
    *,
    customer_id: str = "",
    kind: int | str = 0,
    display_name: str = "",
    tax_id: str = "",
    phone: str = "",
    email: str = "",
    province: str = "",
    city: str = "",
    contact_full_name: str = "",
    contact_title: str = "",
    contact_phone: str = "",
    contact_email: str = "",
    title: str = "",
    amount: AmountIn = None,
    currency_code: str = "",
    product: str = "",
    close_date: str = "",
    per_intent: bool = False,
    phone_region: str,
) -> Options:
    """Field names are the REST body's paths; every violation is reported at once."""
    v: list[FieldViolation] = []
    cid = parse_optional_id(customer_id, "customer.customer_id", v)
    customer = CustomerOptions(
        customer_id=str(cid) if cid else "",
        kind=parse_enum(kind, KINDS, "customer.kind", v, default=0),
        display_name=_text(display_name, "customer.display_name", v),
        tax_id=_text(tax_id, "customer.tax_id", v, limit=MAX_TAX_ID),
        phone=_phone(phone, "customer.phone", phone_region, v),
        email=_email(email, "customer.email", v),
        province=_text(province, "customer.province", v),
        city=_text(city, "customer.city", v),
    )
    contact = ContactOptions(
        full_name=_text(contact_full_name, "contact.full_name", v),
        title=_text(contact_title, "contact.title", v),
        phone=_phone(contact_phone, "contact.phone", phone_region, v),
        email=_email(contact_email, "contact.email", v),
    )
    amount_text, currency = "", ""
    if amount is not None:
        exact: Decimal = parse_amount(amount, "opportunity.amount", v)
        currency = clean_text(currency_code)
        if not CURRENCY_CODE_RE.fullmatch(currency):
            v.append(
                FieldViolation(
                    "opportunity.amount.currency_code", "an ISO 4217 code of 3 upper-case letters"
                )
            )
        amount_text = str(exact)
    opportunity = OpportunityOptions(
        title=_text(title, "opportunity.title", v),
        amount=amount_text,
        currency_code=currency,
        product=_text(product, "opportunity.product", v),
        close_date=_close_date(close_date, "opportunity.close_date", v),
    )
    if v:
        raise InvalidArgument.from_violations(v, reason="CONVERSION_INVALID")
    return Options(customer, contact, opportunity, per_intent)


@dataclass(frozen=True)
class LeadFacts:
    """What a plan takes from the lead (a row of crm_leads.lead.models.leads)."""

    full_name: str
    phone: str
    email: str
    company: str
    province: str
    city: str


@dataclass(frozen=True)
class IntentFacts:
    id: uuid.UUID
    campaign: str
    product_interest: str


def plan(options: Options, lead: LeadFacts, intents: Sequence[IntentFacts]) -> Plan:
    """Fill the lead's defaults. ``intents`` newest first (the lead's latest enquiry gives a
    single opportunity its product and campaign)."""
    c = options.customer
    company = c.display_name or lead.company
    kind = c.kind or (
        customer_pb2.CUSTOMER_KIND_ORGANIZATION if company else customer_pb2.CUSTOMER_KIND_PERSON
    )
    customer = CustomerOptions(
        customer_id=c.customer_id,
        kind=kind,
        display_name=company or lead.full_name,
        tax_id=c.tax_id,
        phone=c.phone or lead.phone,
        email=c.email or lead.email,
        province=c.province or lead.province,
        city=c.city or lead.city,
    )
    k = options.contact
    contact = ContactOptions(
        full_name=k.full_name or lead.full_name,
        title=k.title,
        phone=k.phone or lead.phone,
        email=k.email or lead.email,
    )
    o = options.opportunity
    template = OpportunityOptions(
        title=o.title,
        amount=o.amount or "0.00",
        currency_code=o.currency_code or DEFAULT_CURRENCY,
        product=o.product,
        close_date=o.close_date,
    )
    sources: list[IntentFacts | None] = list(intents) if options.per_intent else list(intents[:1])
    specs: list[OpportunitySpec] = []
    for intent in sources or [None]:
        product = template.product or (intent.product_interest if intent else "")
        base = template.title or customer.display_name
        title = f"{base} · {product}" if product and (options.per_intent or not o.title) else base
        specs.append(
            OpportunitySpec(
                title=title[:MAX_TEXT],
                amount=template.amount,
                currency_code=template.currency_code,
                product=product,
                campaign=intent.campaign if intent else "",
                close_date=template.close_date,
                lead_intent_id=str(intent.id) if intent and options.per_intent else "",
            )
        )
    return Plan(customer, contact, template, options.per_intent, tuple(specs))


def clamp_wait(seconds: float) -> float:
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise InvalidArgument.from_violations(
            [FieldViolation("wait_seconds", f"between 0 and {MAX_WAIT_SECONDS:g}")],
            reason="CONVERSION_INVALID",
        )
    return min(seconds, MAX_WAIT_SECONDS)
