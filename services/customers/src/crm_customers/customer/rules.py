"""Pure customer rules: validation and normalisation of new customers and contacts. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from crm.customers.v1 import customer_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text, is_email, normalise_phone

MAX_TEXT = 200
# Contacts given with a customer are written in its transaction; more go one by one.
MAX_CONTACTS = 100
# REST names kinds without the enum prefix: ORGANIZATION, PERSON.
KINDS = enum_by_short_name(customer_pb2.CustomerKind)


class ContactFields(TypedDict):
    """A contact as a client sent it, before validation."""

    full_name: str
    title: str
    phone: str
    email: str


@dataclass(frozen=True)
class NewContact:
    full_name: str
    title: str
    phone: str
    email: str


@dataclass(frozen=True)
class NewCustomer:
    kind: int
    display_name: str
    tax_id: str
    phone: str
    email: str
    province: str
    city: str
    contacts: tuple[NewContact, ...]


def _texts(
    values: Mapping[str, str], prefix: str, violations: list[FieldViolation]
) -> dict[str, str]:
    cleaned = {name: clean_text(value) for name, value in values.items()}
    violations.extend(
        FieldViolation(prefix + name, f"at most {MAX_TEXT} characters")
        for name, value in cleaned.items()
        if len(value) > MAX_TEXT
    )
    return cleaned


def _phone(raw: str, field: str, region: str, violations: list[FieldViolation]) -> str:
    phone = clean_text(raw)
    if not phone:
        return ""
    try:
        return normalise_phone(phone, region)
    except ValueError as exc:
        violations.append(FieldViolation(field, str(exc)))
        return ""


def _email(raw: str, field: str, violations: list[FieldViolation]) -> str:
    email = clean_text(raw).lower()
    if email and not is_email(email):
        violations.append(FieldViolation(field, "not an email address"))
    return email


def _contact(
    fields: ContactFields, prefix: str, region: str, violations: list[FieldViolation]
) -> NewContact:
    texts = _texts({"full_name": fields["full_name"], "title": fields["title"]}, prefix, violations)
    if not texts["full_name"]:
        violations.append(FieldViolation(prefix + "full_name", "required"))
    return NewContact(
        phone=_phone(fields["phone"], prefix + "phone", region, violations),
        email=_email(fields["email"], prefix + "email", violations),
        **texts,
    )


def _raise_if_any(violations: list[FieldViolation], reason: str) -> None:
    """Every violation goes back at once, so a client fixes a form in one round trip."""
    if violations:
        raise InvalidArgument.from_violations(violations, reason=reason)


def validate_new_contact(
    *, full_name: str, title: str, phone: str, email: str, phone_region: str
) -> NewContact:
    violations: list[FieldViolation] = []
    contact = _contact(
        ContactFields(full_name=full_name, title=title, phone=phone, email=email),
        "",
        phone_region,
        violations,
    )
    _raise_if_any(violations, "CONTACT_INVALID")
    return contact


def validate_new_customer(
    *,
    kind: int | str,
    display_name: str,
    tax_id: str,
    phone: str,
    email: str,
    province: str,
    city: str,
    contacts: Sequence[ContactFields],
    phone_region: str,
) -> NewCustomer:
    """``kind`` is a REST name or a gRPC enum number. Contact violations are named like the
    request body (contacts.0.phone)."""
    violations: list[FieldViolation] = []
    texts = _texts(
        {"display_name": display_name, "tax_id": tax_id, "province": province, "city": city},
        "",
        violations,
    )
    if not texts["display_name"]:
        violations.append(FieldViolation("display_name", "required"))
    kind = parse_enum(kind, KINDS, "kind", violations)
    # Tax ids are case-insensitive codes; one spelling keeps them comparable.
    texts["tax_id"] = texts["tax_id"].upper()
    phone_e164 = _phone(phone, "phone", phone_region, violations)
    email = _email(email, "email", violations)
    if len(contacts) > MAX_CONTACTS:
        violations.append(FieldViolation("contacts", f"at most {MAX_CONTACTS} contacts"))
    new_contacts = tuple(
        _contact(c, f"contacts.{i}.", phone_region, violations) for i, c in enumerate(contacts)
    )
    _raise_if_any(violations, "CUSTOMER_INVALID")
    return NewCustomer(kind=kind, phone=phone_e164, email=email, contacts=new_contacts, **texts)
