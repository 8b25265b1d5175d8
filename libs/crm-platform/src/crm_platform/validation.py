"""Field normalisers every service shares: text, phones (E.164), emails."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


def clean_text(value: str) -> str:
    """NFKC folds full-width characters (Ｚｈａｎｇ -> Zhang); whitespace runs collapse."""
    return " ".join(unicodedata.normalize("NFKC", value).split())


def normalise_phone(raw: str, region: str) -> str:
    """E.164, or ValueError with a reason a client can show."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"not a valid number for region {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_email(value: str) -> bool:
    return EMAIL_RE.fullmatch(value) is not None
