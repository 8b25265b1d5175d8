"""Small helpers for mapping rows to protos."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from crm_platform.errors import FieldViolation
from crm_platform.validation import clean_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def timestamp(value: datetime) -> Timestamp:
    """``Timestamp.FromDatetime``'s result (a naive ``value`` is UTC) at half its cost: it
    goes through ``calendar.timegm`` in Python, and bulk events map thousands of rows."""
    delta = value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def etag(resource_id: uuid.UUID, version: int) -> str:
    return hashlib.sha256(f"{resource_id}:{version}".encode()).hexdigest()[:16]


class ProtoEnum(Protocol):
    """A generated enum (``campaign_pb2.CampaignChannel``)."""

    @property
    def DESCRIPTOR(self) -> EnumDescriptor: ...

    def items(self) -> Iterable[tuple[str, int]]: ...


def enum_by_short_name(enum: ProtoEnum) -> dict[str, int]:
    """REST names of a proto enum's values, in declaration order: without the prefix that
    buf's ENUM_VALUE_PREFIX rule puts on each (CampaignChannel: EMAIL for
    CAMPAIGN_CHANNEL_EMAIL), and without UNSPECIFIED, which no client may choose."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"
    if not all(name.startswith(prefix) for name, _ in enum.items()):
        raise ValueError(f"values of {enum.DESCRIPTOR.full_name} lack the prefix {prefix}")
    return {name.removeprefix(prefix): value for name, value in enum.items() if value != 0}


def parse_enum(
    raw: int | str,
    names: Mapping[str, int],
    field_name: str,
    violations: list[FieldViolation],
    *,
    default: int | None = None,
) -> int:
    """A REST short name or a gRPC enum number. Blank or 0 means ``default`` where the field
    has one; otherwise it, an unknown name, or a number no value has (proto3 enums are open)
    joins ``violations``, listing the names a client may send."""
    if default is not None and raw in ("", 0):
        return default
    value = names.get(clean_text(raw), 0) if isinstance(raw, str) else raw
    if value not in names.values():
        violations.append(FieldViolation(field_name, f"one of {', '.join(names)}"))
    return value
