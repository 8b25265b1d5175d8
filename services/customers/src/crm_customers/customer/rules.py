"""Pure customer rules: validation and normalisation of customers, field-mask updates and
the account hierarchy. No I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from crm.customers.v1 import customer_pb2
from crm_customers.customer import contact_rules, custom_fields
from crm_customers.customer.contact_rules import ContactFields, NewContact, raise_if_any
from crm_platform.errors import FailedPrecondition, FieldViolation
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text

MAX_TEXT = contact_rules.MAX_TEXT
# Contacts given with a customer are written in its transaction; more go one by one.
MAX_CONTACTS = 100
# Account paths hold one id per level; deep enough for group → subsidiary → branch chains.
MAX_DEPTH = 10
# REST names enums without their prefix: ORGANIZATION, PERSON; MEDIUM; FEMALE.
KINDS = enum_by_short_name(customer_pb2.CustomerKind)
SIZES = enum_by_short_name(customer_pb2.OrganizationSize)
GENDERS = enum_by_short_name(customer_pb2.Gender)
ORGANIZATION = customer_pb2.CUSTOMER_KIND_ORGANIZATION
# Unified social credit code: 18 characters without I, O, S, V, Z.
TAX_ID_RE = re.compile(r"^[0-9A-HJ-NP-RTUWXY]{18}$")
TEXT_FIELDS = ("display_name", "legal_name", "tax_id", "province", "city", "industry")
ORGANIZATION_ONLY = ("legal_name", "tax_id", "industry", "organization_size")
PERSON_ONLY = ("gender", "birthday")
# Paths UpdateCustomer accepts (plus custom_fields.<name>); kind is immutable and the
# parent changes only through a move, which rewrites the sub-hierarchy.
PROFILE_FIELDS = (
    *TEXT_FIELDS,
    "phone",
    "email",
    "organization_size",
    "gender",
    "birthday",
)
UPDATABLE = frozenset({*PROFILE_FIELDS, "custom_fields"})


@dataclass(frozen=True)
class NewCustomer:
    kind: int
    profile: dict[str, Any]  # column values of PROFILE_FIELDS
    custom_fields: dict[str, object]
    contacts: tuple[NewContact, ...]


@dataclass(frozen=True)
class Update:
    """Column values to write and the history of what changed (path -> old, new as JSON)."""

    values: dict[str, Any]
    changes: dict[str, tuple[object, object]]


def _tax_id(raw: str, violations: list[FieldViolation]) -> str:
    # Codes are printed with spaces or hyphens and in either case; one spelling compares.
    code = re.sub(r"[\s-]", "", clean_text(raw)).upper()
    if code and not TAX_ID_RE.fullmatch(code):
        violations.append(FieldViolation("tax_id", "not a unified social credit code (18 chars)"))
    return code


def _birthday(raw: object, violations: list[FieldViolation]) -> date | None:
    if isinstance(raw, date):
        return raw
    text = clean_text(str(raw or ""))
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        violations.append(FieldViolation("birthday", "must be a date YYYY-MM-DD"))
        return None
    if day.year < 1900:
        violations.append(FieldViolation("birthday", "must be after 1900"))
    return day


def _kind_checks(kind: int, profile: dict[str, Any], violations: list[FieldViolation]) -> None:
    """Organisation fields on a person (and the reverse) are mistakes, not data."""
    wrong: tuple[str, ...]
    if kind == ORGANIZATION:
        wrong, what = PERSON_ONLY, "persons"
        # The legal name defaults to the trading name; most small firms have only one.
        profile["legal_name"] = profile["legal_name"] or profile["display_name"]
    else:
        wrong, what = ORGANIZATION_ONLY, "organisations"
    violations.extend(FieldViolation(name, f"only for {what}") for name in wrong if profile[name])


def validate_profile(
    raw: Mapping[str, Any], *, kind: int, phone_region: str, violations: list[FieldViolation]
) -> dict[str, Any]:
    """Column values of PROFILE_FIELDS from client values (enums as REST names or numbers)."""
    profile: dict[str, Any] = contact_rules.texts(
        {name: str(raw.get(name) or "") for name in TEXT_FIELDS if name != "tax_id"},
        "",
        violations,
    )
    if not profile["display_name"]:
        violations.append(FieldViolation("display_name", "required"))
    profile["tax_id"] = _tax_id(str(raw.get("tax_id") or ""), violations)
    profile["phone"] = contact_rules.phone(
        str(raw.get("phone") or ""), "phone", phone_region, violations
    )
    profile["email"] = contact_rules.email(str(raw.get("email") or ""), "email", violations)
    profile["organization_size"] = parse_enum(
        raw.get("organization_size") or 0, SIZES, "organization_size", violations, default=0
    )
    profile["gender"] = parse_enum(raw.get("gender") or 0, GENDERS, "gender", violations, default=0)
    profile["birthday"] = _birthday(raw.get("birthday"), violations)
    if kind in KINDS.values():
        _kind_checks(kind, profile, violations)
    return profile


def validate_new_customer(
    *,
    kind: int | str,
    profile: Mapping[str, Any],
    custom_values: Mapping[str, object],
    definitions: Sequence[custom_fields.FieldDefinition],
    contacts: Sequence[ContactFields],
    phone_region: str,
    now: datetime,
) -> NewCustomer:
    """``kind`` is a REST name or a gRPC enum number. Contact violations are named like the
    request body (contacts.0.phone)."""
    violations: list[FieldViolation] = []
    kind = parse_enum(kind, KINDS, "kind", violations)
    cleaned = validate_profile(profile, kind=kind, phone_region=phone_region, violations=violations)
    values = custom_fields.validate_values(custom_values, definitions, violations)
    if len(contacts) > MAX_CONTACTS:
        violations.append(FieldViolation("contacts", f"at most {MAX_CONTACTS} contacts"))
    new_contacts = tuple(
        contact_rules.contact_at(c, f"contacts.{i}.", phone_region, violations, now=now)
        for i, c in enumerate(contacts)
    )
    raise_if_any(violations, "CUSTOMER_INVALID")
    return NewCustomer(kind=kind, profile=cleaned, custom_fields=values, contacts=new_contacts)


def json_value(value: object) -> object:
    """A column value as history JSON: dates as ISO strings."""
    return value.isoformat() if isinstance(value, date) else value


def _custom_mask(
    current: Mapping[str, object], patch: Mapping[str, object], paths: Sequence[str]
) -> dict[str, object] | None:
    """The custom values after the masked paths, or None when none is masked. A masked name
    absent from the patch is cleared (AIP-134)."""
    if not any(p == "custom_fields" or p.startswith("custom_fields.") for p in paths):
        return None
    values = dict(patch) if "custom_fields" in paths else dict(current)
    for path in paths:
        _, dot, name = path.partition(".")
        if dot and path.startswith("custom_fields."):
            values.pop(name, None)
            if patch.get(name) is not None:
                values[name] = patch[name]
    return values


def plan_update(
    *,
    current: Mapping[str, Any],
    patch: Mapping[str, Any],
    paths: Sequence[str],
    definitions: Sequence[custom_fields.FieldDefinition],
    phone_region: str,
) -> Update:
    """Apply the masked ``paths`` of ``patch`` to the ``current`` row and revalidate the whole
    profile, so an update can never produce a customer a create would refuse. Custom values
    are checked against the definitions only when a custom path is masked: a definition
    added later must not block unrelated edits of older customers."""
    violations: list[FieldViolation] = []
    contact_rules.check_mask(paths, UPDATABLE, {"custom_fields"}, violations)
    raise_if_any(violations, "CUSTOMER_INVALID")
    raw = {name: patch.get(name) if name in paths else current[name] for name in PROFILE_FIELDS}
    profile = validate_profile(
        raw, kind=current["kind"], phone_region=phone_region, violations=violations
    )
    custom = _custom_mask(current["custom_fields"], patch.get("custom_fields") or {}, paths)
    values: dict[str, Any] = {n: profile[n] for n in PROFILE_FIELDS if profile[n] != current[n]}
    if custom is not None:
        custom = custom_fields.validate_values(custom, definitions, violations)
    raise_if_any(violations, "CUSTOMER_INVALID")
    changes = {n: (json_value(current[n]), json_value(v)) for n, v in values.items()}
    if custom is not None and custom != current["custom_fields"]:
        values["custom_fields"] = custom
        old = current["custom_fields"]
        changes.update(
            (f"custom_fields.{k}", (old.get(k), custom.get(k)))
            for k in sorted({*old, *custom})
            if old.get(k) != custom.get(k)
        )
    return Update(values, changes)


def check_move(node_path: str, new_parent_path: str | None, subtree_depth: int) -> None:
    """An account cannot move under itself or its own descendants (a cycle), and the moved
    sub-hierarchy must stay within MAX_DEPTH levels. ``subtree_depth`` counts the levels from
    the moved account down to its deepest descendant (1 for a leaf)."""
    if new_parent_path is not None and new_parent_path.startswith(node_path):
        raise FailedPrecondition(
            "cannot move a customer under itself or one of its descendants",
            reason="CUSTOMER_HIERARCHY_CYCLE",
        )
    check_depth(new_parent_path, subtree_depth)


def check_depth(parent_path: str | None, subtree_depth: int) -> None:
    """A sub-hierarchy of ``subtree_depth`` levels fits under ``parent_path`` (None: root)."""
    if depth(parent_path or "/") + subtree_depth > MAX_DEPTH:
        raise FailedPrecondition(
            f"the account hierarchy is limited to {MAX_DEPTH} levels",
            reason="CUSTOMER_HIERARCHY_TOO_DEEP",
        )


def depth(account_path: str) -> int:
    """Levels in a path: "/" is 0, "/<root>/" is 1."""
    return account_path.count("/") - 1


def child_path(parent_path: str | None, customer_id: object) -> str:
    return f"{parent_path or '/'}{customer_id}/"
