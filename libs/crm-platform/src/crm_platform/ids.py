"""Identifiers: UUIDv7, so primary keys are time-ordered (index-friendly, keyset-pageable)."""

from __future__ import annotations

import uuid

import uuid_utils

from crm_platform.errors import FieldViolation, InvalidArgument, invalid
from crm_platform.validation import clean_text


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def parse_id(value: str, field_name: str = "id") -> uuid.UUID:
    """Parse a client-supplied id; a malformed one is a field violation, not a 500."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise invalid(field_name, "must be a UUID") from None


def parse_optional_id(
    value: str, field_name: str, violations: list[FieldViolation]
) -> uuid.UUID | None:
    """An optional reference: blank is None; a malformed one joins ``violations``, to be
    reported with the request's other field errors."""
    value = clean_text(value)
    try:
        return parse_id(value, field_name) if value else None
    except InvalidArgument as exc:
        violations.extend(exc.violations)
        return None


def parse_ids(values: list[str], field_name: str) -> list[uuid.UUID]:
    """A list of ids to act on: every malformed or repeated one is named (``field.N``) in one
    error, so a caller fixes a batch in one round."""
    ids: list[uuid.UUID] = []
    violations: list[FieldViolation] = []
    seen: set[uuid.UUID] = set()
    for i, value in enumerate(values):
        try:
            one = parse_id(value, f"{field_name}.{i}")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
            continue
        if one in seen:
            violations.append(FieldViolation(f"{field_name}.{i}", "listed twice"))
        seen.add(one)
        ids.append(one)
    if violations:
        raise InvalidArgument.from_violations(violations)
    return ids
