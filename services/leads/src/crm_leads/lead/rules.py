"""Pure lead rules: validation and normalisation of a new lead. No I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import phonenumbers

from crm_platform.errors import FieldViolation, InvalidArgument

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_TEXT = 200


@dataclass(frozen=True)
class NewLead:
    full_name: str
    phone: str
    email: str
    company: str
    province: str
    city: str
    source: str


def clean_text(value: str) -> str:
    """NFKC folds full-width characters (Ｚｈａｎｇ -> Zhang); whitespace runs collapse."""
    return " ".join(unicodedata.normalize("NFKC", value).split())


def normalise_phone(raw: str, region: str) -> str:
    """E.164, or ValueError with a reason."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"not a valid number for region {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def validate_new_lead(
    *,
    full_name: str,
    phone: str,
    email: str,
    company: str,
    province: str,
    city: str,
    source: str,
    phone_region: str,
) -> NewLead:
    """Collects every violation at once, so a client fixes a form in one round trip."""
    violations: list[FieldViolation] = []
    values = {
        "full_name": clean_text(full_name),
        "company": clean_text(company),
        "province": clean_text(province),
        "city": clean_text(city),
    }
    for name, value in values.items():
        if len(value) > MAX_TEXT:
            violations.append(FieldViolation(name, f"at most {MAX_TEXT} characters"))
    if not values["full_name"]:
        violations.append(FieldViolation("full_name", "required"))
    phone_e164 = ""
    phone = clean_text(phone)
    if phone:
        try:
            phone_e164 = normalise_phone(phone, phone_region)
        except ValueError as exc:
            violations.append(FieldViolation("phone", str(exc)))
    email = clean_text(email).lower()
    if email and not EMAIL_RE.fullmatch(email):
        violations.append(FieldViolation("email", "not an email address"))
    if not phone_e164 and not email and not any(v.field in ("phone", "email") for v in violations):
        violations.append(FieldViolation("phone", "a phone or an email is required"))
    source = clean_text(source).lower() or "api"
    if not SOURCE_RE.fullmatch(source):
        violations.append(FieldViolation("source", "lower-case letters, digits and '_'"))
    if violations:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            reason="LEAD_INVALID",
            violations=violations,
        )
    return NewLead(phone=phone_e164, email=email, source=source, **values)
