"""Pure rules of conversion matching: the normalised company name, the tenant's matching
keys and the advisory-lock keys of a conversion. No I/O."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.validation import clean_text

TAX_ID = "tax_id"
NAME_CITY = "name_city"
PHONE = "phone"
KEYS = (TAX_ID, NAME_CITY, PHONE)
# The order keys are tried in when a tenant has not chosen one.
DEFAULT_KEYS = KEYS
# Latin legal forms, as whole trailing words ("Acme Co., Ltd." -> "acme"): never cut from
# inside a word, so "Zinc" stays "zinc".
LATIN_SUFFIXES = frozenset(
    {
        "co",
        "company",
        "corp",
        "corporation",
        "inc",
        "incorporated",
        "limited",
        "llc",
        "llp",
        "ltd",
        "plc",
        "gmbh",
        "ag",
        "sa",
        "bv",
        "pte",
        "pty",
    }
)
# Chinese legal forms, cut from the end of the joined name, longest first.
CJK_SUFFIXES = ("有限责任公司", "股份有限公司", "有限公司", "集团", "公司")
_WORDS = re.compile(r"[^\W_]+")


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"


def match_name(display_name: str) -> str:
    """A company name as conversions compare it: NFKC, case-folded, without whitespace,
    punctuation or symbols (ASCII, CJK and full-width alike) and without trailing legal
    forms. "杭州Acme有限公司" and "杭州 ＡＣＭＥ" both give "杭州acme". A name that is
    nothing but a legal form keeps it."""
    text = unicodedata.normalize("NFKC", display_name).casefold()
    words = "".join(ch if _is_word_char(ch) else " " for ch in text).split()
    while len(words) > 1 and words[-1] in LATIN_SUFFIXES:
        words.pop()
    joined = "".join(words)
    stripped = True
    while stripped:
        stripped = False
        for suffix in CJK_SUFFIXES:  # the longest that ends the name, if more remains
            if joined.endswith(suffix):
                if len(joined) > len(suffix):
                    joined = joined[: -len(suffix)]
                    stripped = True
                break
    return joined


def tax_key(raw: str) -> str:
    """Tax ids compare trimmed, without spaces or hyphens, case-insensitively (the stored
    form of customer.rules)."""
    return re.sub(r"[\s-]", "", clean_text(raw)).upper()


def city_key(raw: str) -> str:
    return clean_text(raw)


def validate_keys(raw: Sequence[object]) -> tuple[str, ...]:
    """The tenant's matching keys: a non-empty list of distinct KEYS, tried in order."""
    violations: list[FieldViolation] = []
    if not raw:
        violations.append(FieldViolation("keys", "at least one key"))
    seen: set[str] = set()
    for i, key in enumerate(raw):
        if key not in KEYS:
            violations.append(FieldViolation(f"keys.{i}", f"one of {', '.join(KEYS)}"))
        elif key in seen:
            violations.append(FieldViolation(f"keys.{i}", f"duplicate key {key!r}"))
        else:
            seen.add(str(key))
    if violations:
        raise InvalidArgument.from_violations(violations, reason="MATCH_RULES_INVALID")
    return tuple(str(k) for k in raw)


@dataclass(frozen=True)
class MatchKeys:
    """The values a conversion matches on; empty ones never match."""

    tax_id: str
    match_name: str
    city: str
    phone: str

    def present(self, kind: str) -> bool:
        if kind == TAX_ID:
            return bool(self.tax_id)
        if kind == NAME_CITY:
            # A bare name would join every same-named firm of the country.
            return bool(self.match_name and self.city)
        return bool(self.phone)

    def lock_keys(self, tenant_id: object) -> list[str]:
        """One advisory-lock key per present key kind, sorted (a fixed lock order, so two
        conversions never deadlock). Every kind is locked whatever the tenant's rules, so a
        rules change or an undo (which locks the keys of the customer it removes) cannot
        race a conversion."""
        values = {
            TAX_ID: self.tax_id,
            NAME_CITY: f"{self.match_name}\x1f{self.city}",
            PHONE: self.phone,
        }
        return sorted(
            f"conversion-match:{tenant_id}:{kind}:{value}"
            for kind, value in values.items()
            if self.present(kind)
        )
