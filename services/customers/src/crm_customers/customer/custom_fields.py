"""Pure rules of custom fields: the tenant's definitions (a validated document) and the
values customers carry for them. No I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from crm.customers.v1 import customer_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text

TYPES = enum_by_short_name(customer_pb2.CustomFieldType)
TYPE_NAMES = {number: name for name, number in TYPES.items()}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_FIELDS = 100
MAX_OPTIONS = 200
MAX_VALUE_TEXT = 1000
PREFIX = "custom_fields"


@dataclass(frozen=True)
class FieldDefinition:
    name: str
    type: str  # a TYPES short name: STRING, NUMBER, DATE, BOOL, ENUM
    options: tuple[str, ...] = ()
    required: bool = False


def _definition(
    raw: Mapping[str, Any], at: str, seen: set[str], violations: list[FieldViolation]
) -> FieldDefinition:
    name = clean_text(str(raw.get("name", "")))
    if not NAME_RE.fullmatch(name):
        violations.append(FieldViolation(f"{at}.name", "lower_snake_case, at most 63 characters"))
    elif name in seen:
        violations.append(FieldViolation(f"{at}.name", f"duplicate field {name!r}"))
    seen.add(name)
    kind = TYPE_NAMES.get(parse_enum(raw.get("type", 0), TYPES, f"{at}.type", violations), "")
    options = tuple(dict.fromkeys(clean_text(str(o)) for o in raw.get("options", ())))
    if kind == "ENUM" and not options:
        violations.append(FieldViolation(f"{at}.options", "an ENUM field needs options"))
    elif kind != "ENUM" and options:
        violations.append(FieldViolation(f"{at}.options", "only ENUM fields have options"))
    if len(options) > MAX_OPTIONS or "" in options:
        violations.append(FieldViolation(f"{at}.options", f"1 to {MAX_OPTIONS} non-blank values"))
    return FieldDefinition(name, kind, options, bool(raw.get("required", False)))


def validate_schema(fields: Sequence[Mapping[str, Any]]) -> tuple[FieldDefinition, ...]:
    """Definitions as a client sent them (``type`` a REST name or enum number); every
    violation is reported at once, named ``fields.<i>.<attribute>``."""
    violations: list[FieldViolation] = []
    if len(fields) > MAX_FIELDS:
        violations.append(FieldViolation("fields", f"at most {MAX_FIELDS} fields"))
    seen: set[str] = set()
    definitions = tuple(
        _definition(f, f"fields.{i}", seen, violations) for i, f in enumerate(fields)
    )
    if violations:
        raise InvalidArgument.from_violations(violations, reason="CUSTOMER_FIELDS_INVALID")
    return definitions


def to_document(definitions: Sequence[FieldDefinition]) -> list[dict[str, Any]]:
    return [
        {"name": d.name, "type": d.type, "options": list(d.options), "required": d.required}
        for d in definitions
    ]


def from_document(document: Sequence[Mapping[str, Any]]) -> tuple[FieldDefinition, ...]:
    return tuple(
        FieldDefinition(d["name"], d["type"], tuple(d["options"]), d["required"]) for d in document
    )


def _value(definition: FieldDefinition, value: object) -> tuple[object, str]:
    """The normalised value, or an error description."""
    match definition.type:
        case "STRING" if isinstance(value, str):
            text = clean_text(value)
            return text, "" if len(text) <= MAX_VALUE_TEXT else f"at most {MAX_VALUE_TEXT} chars"
        case "NUMBER" if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                return value, "must be a finite number"
            # gRPC Structs carry every number as a double; 3.0 and 3 are one value.
            return int(value) if float(value).is_integer() else value, ""
        case "BOOL" if isinstance(value, bool):
            return value, ""
        case "DATE" if isinstance(value, str):
            try:
                return date.fromisoformat(value).isoformat(), ""
            except ValueError:
                return value, "must be a date YYYY-MM-DD"
        case "ENUM" if isinstance(value, str):
            text = clean_text(value)
            return (
                text,
                "" if text in definition.options else f"one of {', '.join(definition.options)}",
            )
    return value, f"must be a {definition.type.lower()}"


def validate_values(
    values: Mapping[str, object],
    definitions: Sequence[FieldDefinition],
    violations: list[FieldViolation],
) -> dict[str, object]:
    """Normalised values; a null value means none. Violations are named
    ``custom_fields.<name>``: unknown fields, wrong types, missing required ones."""
    by_name = {d.name: d for d in definitions}
    cleaned: dict[str, object] = {}
    for name, value in values.items():
        definition = by_name.get(name)
        if definition is None:
            violations.append(FieldViolation(f"{PREFIX}.{name}", "unknown field"))
        elif value is not None:
            cleaned[name], problem = _value(definition, value)
            if problem:
                violations.append(FieldViolation(f"{PREFIX}.{name}", problem))
    violations.extend(
        FieldViolation(f"{PREFIX}.{d.name}", "required")
        for d in definitions
        if d.required and d.name not in cleaned
    )
    return cleaned
