"""Opaque cursor page tokens for keyset pagination over time-ordered (UUIDv7) ids."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from crm_platform.errors import invalid

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: uuid.UUID | None


def clamp_page_size(page_size: int | None) -> int:
    if not page_size or page_size <= 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def _filter_hash(filter_key: str) -> str:
    return hashlib.sha256(filter_key.encode()).hexdigest()[:12]


def encode_token(last_id: uuid.UUID, filter_key: str = "") -> str:
    raw = json.dumps({"k": str(last_id), "f": _filter_hash(filter_key)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filter_key: str = "") -> uuid.UUID:
    """A token from another query (different filter) or a forged one is a field violation."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        last = uuid.UUID(data["k"])
        matches = data["f"] == _filter_hash(filter_key)
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise invalid("page_token", "is not a token this API issued") from None
    if not matches:
        raise invalid("page_token", "was issued for a different query")
    return last


def page_request(
    page_size: int | None, page_token: str | None, filter_key: str = ""
) -> PageRequest:
    after = decode_token(page_token, filter_key) if page_token else None
    return PageRequest(size=clamp_page_size(page_size), after=after)


def page_of(rows: Sequence[T], page: PageRequest, filter_key: str = "") -> tuple[list[T], str]:
    """Rows were fetched with LIMIT size+1: trim to the page and make the next token."""
    items = list(rows[: page.size])
    if len(rows) > page.size:
        return items, encode_token(items[-1].id, filter_key)  # type: ignore[attr-defined]
    return items, ""
