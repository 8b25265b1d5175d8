"""Pure lead rules: validation and normalisation of a new lead. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.validation import clean_text, is_email, normalise_phone

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
    if email and not is_email(email):
        violations.append(FieldViolation("email", "not an email address"))
    if not phone_e164 and not email and not any(v.field in ("phone", "email") for v in violations):
        violations.append(FieldViolation("phone", "a phone or an email is required"))
    source = clean_text(source).lower() or "api"
    if not SOURCE_RE.fullmatch(source):
        violations.append(FieldViolation("source", "lower-case letters, digits and '_'"))
    if violations:
        raise InvalidArgument.from_violations(violations, reason="LEAD_INVALID")
    return NewLead(phone=phone_e164, email=email, source=source, **values)
