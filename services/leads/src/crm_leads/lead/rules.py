"""Pure lead rules: validation, normalisation and de-duplication keys. No I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.validation import clean_text, is_email, normalise_phone, unstorable

SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# A sales-territory code ("east-zj-01"), matched exactly by distribution rules.
TERRITORY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Custom attributes distribution rules can match (``custom``: key -> value).
CUSTOM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_CUSTOM = 20
# WeChat open_id / union_id: URL-safe base64-like tokens (28 characters in practice).
WECHAT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_TEXT = 200

KEY_PHONE = "phone"
KEY_EMAIL = "email"
KEY_OPEN_ID = "open_id"


@dataclass(frozen=True)
class NewLead:
    full_name: str
    phone: str
    email: str
    company: str
    province: str
    city: str
    source: str
    open_id: str = ""
    union_id: str = ""
    territory: str = ""
    # Sorted (key, value) pairs: hashable like the rest of the lead.
    custom: tuple[tuple[str, str], ...] = ()

    def dedup_keys(self) -> list[tuple[str, str]]:
        """System de-duplication keys (same normalised phone, email or open_id), in a fixed
        order so concurrent captures claim them in the same order (no deadlocks)."""
        keys = [(KEY_EMAIL, self.email), (KEY_OPEN_ID, self.open_id), (KEY_PHONE, self.phone)]
        return [(kind, value) for kind, value in keys if value]


@dataclass(frozen=True)
class NewIntent:
    source: str
    campaign: str = ""
    product_interest: str = ""


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
    open_id: str = "",
    union_id: str = "",
    territory: str = "",
    custom_fields: Mapping[str, str] | None = None,
) -> NewLead:
    """Collects every violation at once, so a client fixes a form in one round trip."""
    given = (full_name, phone, email, company, province, city, source, open_id, union_id)
    if unstorable("".join(given)):  # one check for the common case: webhooks and files
        names = ("full_name", "phone", "email", "company", "province", "city", "source")
        _refuse_unstorable(zip((*names, "open_id", "union_id"), given, strict=True), "")
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
    phone_e164, email, wechat = _contact(phone, email, open_id, union_id, phone_region, violations)
    source = clean_text(source).lower() or "api"
    if not SOURCE_RE.fullmatch(source):
        violations.append(FieldViolation("source", "lower-case letters, digits and '_'"))
    territory = territory.strip()
    if territory and not TERRITORY_RE.fullmatch(territory):
        violations.append(
            FieldViolation("territory", "1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'")
        )
    custom = _custom(custom_fields or {}, violations)
    if violations:
        raise InvalidArgument.from_violations(violations, reason="LEAD_INVALID")
    return NewLead(
        phone=phone_e164,
        email=email,
        source=source,
        **values,
        **wechat,
        territory=territory,
        custom=custom,
    )


def _custom(
    fields: Mapping[str, str], violations: list[FieldViolation]
) -> tuple[tuple[str, str], ...]:
    """Custom attributes, values cleaned; a blank value is no attribute."""
    if len(fields) > MAX_CUSTOM:
        violations.append(FieldViolation("custom_fields", f"at most {MAX_CUSTOM} attributes"))
        return ()
    custom: dict[str, str] = {}
    for key, raw in fields.items():
        value = clean_text(raw)
        if not CUSTOM_KEY_RE.fullmatch(key):
            violations.append(
                FieldViolation(
                    f"custom_fields.{key}", "key: a letter or '_', then letters, digits, '_' (≤ 64)"
                )
            )
        elif unstorable(value) or len(value) > MAX_TEXT:
            violations.append(
                FieldViolation(f"custom_fields.{key}", f"at most {MAX_TEXT} storable characters")
            )
        elif value:
            custom[key] = value
    return tuple(sorted(custom.items()))


def _contact(
    phone: str,
    email: str,
    open_id: str,
    union_id: str,
    region: str,
    violations: list[FieldViolation],
) -> tuple[str, str, dict[str, str]]:
    """Normalised phone, email and WeChat ids; at least one way to reach the person."""
    phone_e164 = ""
    phone = clean_text(phone)
    if phone:
        try:
            phone_e164 = normalise_phone(phone, region)
        except ValueError as exc:
            violations.append(FieldViolation("phone", str(exc)))
    email = clean_text(email).lower()
    if email and not is_email(email):
        violations.append(FieldViolation("email", "not an email address"))
    wechat = {"open_id": open_id.strip(), "union_id": union_id.strip()}
    for name, value in wechat.items():
        if value and not WECHAT_ID_RE.fullmatch(value):
            violations.append(FieldViolation(name, "16-64 characters of A-Z, a-z, 0-9, '_', '-'"))
    reachable = phone_e164 or email or wechat["open_id"]
    if not reachable and not any(v.field in ("phone", "email", "open_id") for v in violations):
        violations.append(
            FieldViolation("phone", "a phone, an email or a WeChat open_id is required")
        )
    return phone_e164, email, wechat


def _refuse_unstorable(fields: Iterable[tuple[str, str]], prefix: str) -> None:
    violations = [
        FieldViolation(prefix + name, why)
        for name, value in fields
        if (why := unstorable(value)) is not None
    ]
    if violations:
        raise InvalidArgument.from_violations(violations, reason="LEAD_INVALID")


def validate_intent(*, source: str, campaign: str, product_interest: str) -> NewIntent:
    _refuse_unstorable(
        (("source", source), ("campaign", campaign), ("product_interest", product_interest)),
        "intent.",
    )
    violations = [
        FieldViolation(f"intent.{name}", f"at most {MAX_TEXT} characters")
        for name, value in (("campaign", campaign), ("product_interest", product_interest))
        if len(value) > MAX_TEXT
    ]
    if violations:
        raise InvalidArgument.from_violations(violations, reason="LEAD_INVALID")
    return NewIntent(
        source=source, campaign=clean_text(campaign), product_interest=clean_text(product_interest)
    )
