"""Pure contact rules: validation and normalisation of contacts, their buying roles,
communication preferences and consents, field-mask updates and the reports-to hierarchy.
No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, cast

from crm.customers.v1 import customer_pb2
from crm_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text, is_email, normalise_phone

MAX_TEXT = 200
ROLES = enum_by_short_name(customer_pb2.BuyingRole)
CHANNELS = enum_by_short_name(customer_pb2.ContactChannel)
PURPOSES = enum_by_short_name(customer_pb2.ConsentPurpose)
PURPOSE_NAMES: dict[int, str] = {number: name for name, number in PURPOSES.items()}
# A channel is only a preference if the contact has the detail it needs.
CHANNEL_NEEDS: dict[int, str] = {
    customer_pb2.CONTACT_CHANNEL_PHONE: "phone",
    customer_pb2.CONTACT_CHANNEL_SMS: "phone",
    customer_pb2.CONTACT_CHANNEL_EMAIL: "email",
}
# Clocks of capturing systems drift; a consent from the near future is still believable.
CLOCK_SKEW = timedelta(minutes=5)
UPDATABLE = frozenset(
    {
        "full_name",
        "title",
        "phone",
        "email",
        "reports_to_id",
        "buying_roles",
        "allowed_channels",
        "preferred_channel",
        "consents",
    }
)


class ConsentFields(TypedDict):
    purpose: int | str
    granted: bool
    consent_time: datetime | None
    source: str


class ContactFields(TypedDict):
    """A contact as a client sent it, before validation (enums as REST names or numbers)."""

    full_name: str
    title: str
    phone: str
    email: str
    buying_roles: NotRequired[Sequence[int | str]]
    allowed_channels: NotRequired[Sequence[int | str]]
    preferred_channel: NotRequired[int | str]
    consents: NotRequired[Sequence[ConsentFields]]


@dataclass(frozen=True)
class NewContact:
    full_name: str
    title: str
    phone: str
    email: str
    buying_roles: list[int] = field(default_factory=list)
    allowed_channels: list[int] = field(default_factory=list)
    preferred_channel: int = 0
    # {"MARKETING_EMAIL": {"granted": true, "time": "<ISO>", "source": "web_form"}}
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """Column values."""
        return dict(self.__dict__)


def raise_if_any(violations: list[FieldViolation], reason: str) -> None:
    """Every violation goes back at once, so a client fixes a form in one round trip."""
    if violations:
        raise InvalidArgument.from_violations(violations, reason=reason)


def texts(
    values: Mapping[str, str], prefix: str, violations: list[FieldViolation]
) -> dict[str, str]:
    cleaned = {name: clean_text(value) for name, value in values.items()}
    violations.extend(
        FieldViolation(prefix + name, f"at most {MAX_TEXT} characters")
        for name, value in cleaned.items()
        if len(value) > MAX_TEXT
    )
    return cleaned


def phone(raw: str, field_name: str, region: str, violations: list[FieldViolation]) -> str:
    value = clean_text(raw)
    if not value:
        return ""
    try:
        return normalise_phone(value, region)
    except ValueError as exc:
        violations.append(FieldViolation(field_name, str(exc)))
        return ""


def email(raw: str, field_name: str, violations: list[FieldViolation]) -> str:
    value = clean_text(raw).lower()
    if value and not is_email(value):
        violations.append(FieldViolation(field_name, "not an email address"))
    return value


def check_mask(
    paths: Sequence[str],
    allowed: Collection[str],
    map_fields: Collection[str],
    violations: list[FieldViolation],
) -> None:
    """Every path is an updatable field, or ``<map field>.<key>``."""
    if not paths:
        violations.append(FieldViolation("update_mask", "required: the fields to change"))
    for path in paths:
        head, dot, key = path.partition(".")
        if not (path in allowed or (dot and key and head in map_fields)):
            violations.append(FieldViolation("update_mask", f"unknown or read-only field {path!r}"))


def _enum_set(
    raw: Sequence[int | str], names: Mapping[str, int], at: str, violations: list[FieldViolation]
) -> list[int]:
    """A set, stored sorted: repeating a role is not an error, it is the same role."""
    return sorted({parse_enum(v, names, f"{at}.{i}", violations) for i, v in enumerate(raw)})


def _consents(
    raw: Sequence[ConsentFields], at: str, now: datetime, violations: list[FieldViolation]
) -> dict[str, dict[str, Any]]:
    consents: dict[str, dict[str, Any]] = {}
    for i, consent in enumerate(raw):
        number = parse_enum(consent["purpose"], PURPOSES, f"{at}.{i}.purpose", violations)
        name = PURPOSE_NAMES.get(number, "")
        if name in consents:
            violations.append(FieldViolation(f"{at}.{i}.purpose", f"{name} given twice"))
        source = clean_text(consent["source"])
        if not source or len(source) > MAX_TEXT:
            violations.append(FieldViolation(f"{at}.{i}.source", "required, at most 200 chars"))
        when = consent["consent_time"] or now
        if when.tzinfo is None or when > now + CLOCK_SKEW:
            violations.append(FieldViolation(f"{at}.{i}.consent_time", "a past time with zone"))
        consents[name] = {
            "granted": bool(consent["granted"]),
            "time": when.isoformat(),
            "source": source,
        }
    return consents


def contact_at(
    fields: ContactFields,
    prefix: str,
    region: str,
    violations: list[FieldViolation],
    *,
    now: datetime,
) -> NewContact:
    names = texts({"full_name": fields["full_name"], "title": fields["title"]}, prefix, violations)
    if not names["full_name"]:
        violations.append(FieldViolation(prefix + "full_name", "required"))
    new = NewContact(
        phone=phone(fields["phone"], prefix + "phone", region, violations),
        email=email(fields["email"], prefix + "email", violations),
        buying_roles=_enum_set(
            fields.get("buying_roles", ()), ROLES, prefix + "buying_roles", violations
        ),
        allowed_channels=_enum_set(
            fields.get("allowed_channels", ()), CHANNELS, prefix + "allowed_channels", violations
        ),
        preferred_channel=parse_enum(
            fields.get("preferred_channel", 0) or 0,
            CHANNELS,
            prefix + "preferred_channel",
            violations,
            default=0,
        ),
        consents=_consents(fields.get("consents", ()), prefix + "consents", now, violations),
        **names,
    )
    _check_preference(new, prefix, violations)
    return new


def _check_preference(new: NewContact, prefix: str, violations: list[FieldViolation]) -> None:
    preferred = new.preferred_channel
    if not preferred:
        return
    if new.allowed_channels and preferred not in new.allowed_channels:
        violations.append(
            FieldViolation(prefix + "preferred_channel", "must be one of allowed_channels")
        )
    needs = CHANNEL_NEEDS.get(preferred)
    if needs and not getattr(new, needs):
        violations.append(
            FieldViolation(prefix + "preferred_channel", f"the contact has no {needs}")
        )


def validate_new_contact(fields: ContactFields, *, phone_region: str, now: datetime) -> NewContact:
    violations: list[FieldViolation] = []
    new = contact_at(fields, "", phone_region, violations, now=now)
    raise_if_any(violations, "CONTACT_INVALID")
    return new


def stored_fields(row: Mapping[str, Any]) -> ContactFields:
    """A stored contact as client input, so an update revalidates the whole contact."""
    return ContactFields(
        full_name=row["full_name"],
        title=row["title"],
        phone=row["phone"],
        email=row["email"],
        buying_roles=row["buying_roles"],
        allowed_channels=row["allowed_channels"],
        preferred_channel=row["preferred_channel"],
        consents=[
            ConsentFields(
                purpose=name,
                granted=c["granted"],
                consent_time=datetime.fromisoformat(c["time"]),
                source=c["source"],
            )
            for name, c in row["consents"].items()
        ],
    )


def plan_update(
    *,
    current: Mapping[str, Any],
    patch: ContactFields,
    paths: Sequence[str],
    phone_region: str,
    now: datetime,
) -> dict[str, Any]:
    """Column values of the masked fields after validating the whole updated contact
    (reports_to_id is checked by the caller, which knows the other contacts)."""
    violations: list[FieldViolation] = []
    check_mask(paths, UPDATABLE, (), violations)
    raise_if_any(violations, "CONTACT_INVALID")
    merged: dict[str, Any] = dict(stored_fields(current))
    empty = ContactFields(full_name="", title="", phone="", email="")
    merged.update({p: patch.get(p, empty.get(p)) for p in paths if p != "reports_to_id"})
    new = contact_at(cast(ContactFields, merged), "", phone_region, violations, now=now)
    raise_if_any(violations, "CONTACT_INVALID")
    values = new.values()
    return {p: values[p] for p in paths if p != "reports_to_id"}


def changes(
    current: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, tuple[object, object]]:
    """History of a contact update: consents per purpose (consents.MARKETING_SMS), ids as
    strings, enums as REST names."""
    out: dict[str, tuple[object, object]] = {}
    for name, new in values.items():
        old = current[name]
        if name == "consents":
            out.update(
                (f"consents.{k}", (old.get(k), new.get(k)))
                for k in sorted({*old, *new})
                if old.get(k) != new.get(k)
            )
        elif old != new:
            out[name] = (_json(name, old), _json(name, new))
    return out


def _json(name: str, value: Any) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    names = {"buying_roles": ROLES, "allowed_channels": CHANNELS, "preferred_channel": CHANNELS}
    if name in names:
        by_number = {n: k for k, n in names[name].items()}
        return [by_number[v] for v in value] if isinstance(value, list) else by_number.get(value)
    return value


def check_reports_to(
    contact_id: uuid.UUID | None,
    manager_id: uuid.UUID,
    managers: Mapping[uuid.UUID, uuid.UUID | None],
) -> None:
    """``managers`` maps every contact of the customer to whom it reports. The new manager
    must be one of them, and following the chain up from it must not reach the contact."""
    if manager_id not in managers:
        raise InvalidArgument.from_violations(
            [FieldViolation("reports_to_id", "not a contact of this customer")],
            reason="CONTACT_INVALID",
        )
    seen: set[uuid.UUID] = set()
    step: uuid.UUID | None = manager_id
    while step is not None and step not in seen:
        if step == contact_id:
            raise FailedPrecondition(
                "a contact cannot report to itself or to someone who reports to it",
                reason="CONTACT_REPORTS_TO_CYCLE",
            )
        seen.add(step)
        step = managers.get(step)
