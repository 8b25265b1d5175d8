"""Field normalisers every service shares: text, phones (E.164), emails, dates; and the one
character no text field can hold."""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any, NamedTuple

import phonenumbers
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from phonenumbers import PhoneMetadata
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

# [0-9], not \d: \d also matches full-width and other Unicode digits.
ISO_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# RFC 5322 dot-atom local part (non-ASCII letters allowed, as SMTPUTF8 does), and an RFC 1035
# host name: labels of letters, digits and inner hyphens, a top-level domain that is not
# numeric. An IDN domain is checked in its ASCII (IDNA) form.
_LOCAL_RE = re.compile(r"^[^\s@\"(),:;<>\[\]\\.]+(\.[^\s@\"(),:;<>\[\]\\.]+)*$")
_DOMAIN_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$"
)
MAX_EMAIL = 254
_MOBILE_TYPES = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
)
_SEPARATORS = str.maketrans("", "", " -().")

# PostgreSQL text and jsonb hold neither U+0000 (the statement fails) nor a lone UTF-16
# surrogate (no UTF-8 encoding exists, so the driver fails; JSON's "\ud800" escape decodes to
# one). Either is refused up front with the field named, never left to fail as a 500.
NUL = "\x00"
NUL_MESSAGE = "contains a NUL character (U+0000), which cannot be stored"
SURROGATE_MESSAGE = "contains a lone UTF-16 surrogate (U+D800-U+DFFF), which is not a character"
# Python's json module reads NaN, Infinity and 1e999; JSON (and jsonb) has no such numbers.
NON_FINITE_MESSAGE = "must be a finite number"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (NUL_MESSAGE, SURROGATE_MESSAGE), or None."""
    if value.isascii():  # the common case, in C: only a NUL can be wrong
        return NUL_MESSAGE if NUL in value else None
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return NUL_MESSAGE if found.group() == NUL else SURROGATE_MESSAGE


def printable(key: str) -> str:
    """``key`` with unstorable characters written as ``\\uXXXX``, fit to name it in an
    error (a problem document holding a lone surrogate could not be encoded either)."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)


Found = tuple[str, str]  # (path, message)


def unstorable_paths(value: Any, path: str = "") -> Iterator[Found]:
    """(dotted path, why) for each string in ``value`` — str, or lists, tuples and dicts of
    them, nested — that cannot be stored (``leads.0.full_name``; a mapping's key names its
    entry, and a key that cannot be stored is itself reported), and each NaN or infinity."""
    if isinstance(value, str):
        why = unstorable(value)
        if why is not None:
            yield path, why
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield path, NON_FINITE_MESSAGE
    elif isinstance(value, dict):
        for key, item in value.items():
            label = printable(key) if isinstance(key, str) else key
            child = f"{path}.{label}" if path else str(label)
            why = unstorable(key) if isinstance(key, str) else None
            if why is not None:
                yield child, why
            else:
                yield from unstorable_paths(item, child)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from unstorable_paths(item, f"{path}.{index}" if path else str(index))


def proto_unstorable_paths(message: Message, path: str = "") -> Iterator[Found]:
    """``unstorable_paths`` for a protobuf message (gRPC requests): its set string fields,
    nested messages, repeated fields and maps; a Struct's paths are its JSON keys. (A parsed
    proto3 string is valid UTF-8, so in practice only a NUL is found.)"""
    if message.DESCRIPTOR.full_name in _JSON_TYPES:
        yield from _json_value_paths(message, path)
        return
    for field, value in message.ListFields():
        kind = _kind(field)
        if kind == _OTHER:
            continue
        name = f"{path}.{field.name}" if path else field.name
        if kind == _TEXT:
            yield from unstorable_paths(value, name)
        elif kind == _TEXTS:
            yield from unstorable_paths(list(value), name)
        elif kind == _MESSAGE:
            yield from proto_unstorable_paths(value, name)
        elif kind == _MESSAGES:
            for index, item in enumerate(value):
                yield from proto_unstorable_paths(item, f"{name}.{index}")
        else:
            yield from _map_unstorable_paths(value, name)


def _json_value_paths(message: Message, path: str) -> Iterator[Found]:
    """A Struct, ListValue or Value walked as the JSON it stands for (json_format would
    raise on a NaN instead of naming it)."""
    kind = message.DESCRIPTOR.full_name
    if kind == "google.protobuf.Struct":
        for key, item in message.fields.items():  # type: ignore[attr-defined]
            child = f"{path}.{printable(key)}" if path else printable(key)
            why = unstorable(key)
            if why is not None:
                yield child, why
            else:
                yield from _json_value_paths(item, child)
    elif kind == "google.protobuf.ListValue":
        for index, item in enumerate(message.values):  # type: ignore[attr-defined]
            yield from _json_value_paths(item, f"{path}.{index}" if path else str(index))
    else:
        which = message.WhichOneof("kind")
        if which in ("string_value", "number_value"):
            yield from unstorable_paths(getattr(message, which), path)
        elif which in ("struct_value", "list_value"):
            yield from _json_value_paths(getattr(message, which), path)


def _map_unstorable_paths(entries: Mapping[Any, Any], path: str) -> Iterator[Found]:
    """A map field's keys, and its values (scalars or messages)."""
    for key, item in entries.items():
        child = f"{path}.{printable(key) if isinstance(key, str) else key}"
        why = unstorable(key) if isinstance(key, str) else None
        if why is not None:
            yield child, why
        elif isinstance(item, Message):
            yield from proto_unstorable_paths(item, child)
        elif isinstance(item, str):
            why = unstorable(item)
            if why is not None:
                yield child, why


_JSON_TYPES = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)
_OTHER, _TEXT, _TEXTS, _MESSAGE, _MESSAGES, _MAP = range(6)


@functools.cache
def _kind(field: FieldDescriptor) -> int:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _TEXTS if field.is_repeated else _TEXT
    kind = field.message_type
    if field.type != FieldDescriptor.TYPE_MESSAGE or kind is None:
        return _OTHER
    if kind.GetOptions().map_entry:
        return _MAP
    return _MESSAGES if field.is_repeated else _MESSAGE


class InputModel(BaseModel):
    """Base of every model parsed from client input (request bodies, rule documents): a
    string that cannot be stored (``unstorable``) or a NaN or infinity anywhere in a field,
    however nested — in ``Any``-typed fields too, which pydantic's own checks do not reach —
    is that field's validation error."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        for where, why in unstorable_paths(value):
            detail = f"at {where}: {why}" if where else why
            raise PydanticCustomError("unstorable_text", "{detail}", {"detail": detail})
        return value


def clean_text(value: str) -> str:
    """NFKC folds full-width characters (Ｚｈａｎｇ -> Zhang); whitespace runs collapse."""
    if not value:
        return value
    if value.isascii():  # NFKC leaves ASCII unchanged; skipping it halves bulk imports' cost
        return " ".join(value.split())
    return " ".join(unicodedata.normalize("NFKC", value).split())


class _MobilePlan(NamedTuple):
    country_code: str
    pattern: re.Pattern[str]
    lengths: frozenset[int]


@functools.cache
def _mobile_plan(region: str) -> _MobilePlan | None:
    """The region's mobile numbering plan, straight from libphonenumber's metadata."""
    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None or meta.mobile is None or not meta.mobile.national_number_pattern:
        return None
    return _MobilePlan(
        str(meta.country_code),
        re.compile(meta.mobile.national_number_pattern),
        frozenset(meta.mobile.possible_length or ()),
    )


def _fast_mobile(raw: str, region: str) -> str | None:
    """E.164 for the common case — a mobile of ``region`` written as plain digits, with or
    without +country — checked against the same metadata ``phonenumbers.parse`` uses, at a
    tenth of its cost (bulk imports normalise a million phones). None: take the full path."""
    plan = _mobile_plan(region)
    if plan is None:
        return None
    digits = raw.translate(_SEPARATORS)
    if digits.startswith("+"):
        if not digits.startswith(plan.country_code, 1):
            return None
        digits = digits[1 + len(plan.country_code) :]
    if (
        digits.isascii()
        and digits.isdigit()
        and len(digits) in plan.lengths
        and plan.pattern.fullmatch(digits)
    ):
        return f"+{plan.country_code}{digits}"
    return None


def normalise_phone(raw: str, region: str) -> str:
    """E.164, or ValueError with a reason a client can show."""
    fast = _fast_mobile(raw, region)
    if fast is not None:
        return fast
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"not a valid number for region {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_mobile_e164(phone: str, region: str) -> bool:
    """Whether an E.164 number (already validated) is a mobile; ``region`` is the one it
    most likely belongs to (the tenant's), which makes the common case a regex match."""
    if not phone:
        return False
    if _fast_mobile(phone, region) is not None:
        return True
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) in _MOBILE_TYPES


def is_email(value: str) -> bool:
    """A deliverable-looking address: syntax and domain sanity, no DNS lookup."""
    local, at, domain = value.rpartition("@")
    if not at or len(value) > MAX_EMAIL or len(local) > 64 or not _LOCAL_RE.fullmatch(local):
        return False
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return len(domain) <= 253 and _DOMAIN_RE.fullmatch(domain) is not None


def iso_date(raw: str) -> date:
    """A calendar date written exactly YYYY-MM-DD, or ValueError: date.fromisoformat alone
    also takes 20260101 and week dates, and the right shape can still be no day
    (2026-02-30)."""
    if not ISO_DATE_RE.fullmatch(raw):
        raise ValueError(raw)
    return date.fromisoformat(raw)
