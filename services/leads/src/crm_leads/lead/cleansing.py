"""Pure cleansing rules: the automatic checks a captured lead goes through. No I/O.

A lead is VERIFIED automatically only when it has a mobile phone, a name that is not an
obvious placeholder and something that places it (company, province or city). Anything
else goes to the review queue (UNVERIFIED) with a note saying why; only a reviewer marks a
lead INVALID, because a false "invalid" would silently lose a customer."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from dataclasses import dataclass

from crm.leads.v1 import lead_pb2
from crm_leads.lead.rules import NewLead
from crm_platform.validation import is_mobile_e164

UNVERIFIED = lead_pb2.LEAD_VERIFICATION_UNVERIFIED
VERIFIED = lead_pb2.LEAD_VERIFICATION_VERIFIED
INVALID = lead_pb2.LEAD_VERIFICATION_INVALID

# Compared case-insensitively, after removing spaces and punctuation.
PLACEHOLDER_NAMES = frozenset(
    {
        "test",
        "testing",
        "tester",
        "asdf",
        "qwer",
        "qwerty",
        "abc",
        "abcd",
        "xxx",
        "na",
        "n/a",
        "none",
        "null",
        "unknown",
        "name",
        "fake",
        "demo",
        "123",
        "1234",
        "12345",
        "123456",
        "测试",
        "无",
        "未知",
        "匿名",
        "先生",
        "女士",
    }
)
DISPOSABLE_EMAIL_DOMAINS = frozenset(
    {
        "mailinator.com",
        "guerrillamail.com",
        "10minutemail.com",
        "temp-mail.org",
        "tempmail.com",
        "yopmail.com",
        "trashmail.com",
        "sharklasers.com",
        "getnada.com",
        "dispostable.com",
        "maildrop.cc",
        "throwawaymail.com",
    }
)
_NOT_NAME = re.compile(r"[\s\W_]+")
# Only a hint for the fast path: any other country's number is still checked exactly.
LIKELY_REGION = "CN"


@dataclass(frozen=True)
class Verdict:
    verification: int  # lead_pb2.LeadVerification
    note: str


def is_placeholder_name(name: str, placeholders: Collection[str] = PLACEHOLDER_NAMES) -> bool:
    """A listed placeholder, one character repeated ("aaa", "111"), or digits only."""
    folded = _NOT_NAME.sub("", name).casefold()
    if not folded:
        return True
    listed = _folded(
        placeholders if isinstance(placeholders, frozenset) else frozenset(placeholders)
    )
    return folded in listed or len(set(folded)) == 1 or folded.isdigit()


@functools.lru_cache(maxsize=64)
def _folded(placeholders: frozenset[str]) -> frozenset[str]:
    # Folded once per list, not once per lead: imports check a million names.
    return frozenset(_NOT_NAME.sub("", p).casefold() for p in placeholders)


def is_mobile(phone: str, region: str = LIKELY_REGION) -> bool:
    """``phone`` is already E.164 (validated on capture)."""
    return is_mobile_e164(phone, region)


def is_disposable_email(email: str, domains: Collection[str] = DISPOSABLE_EMAIL_DOMAINS) -> bool:
    return email.rpartition("@")[2].casefold() in domains


def check(
    lead: NewLead,
    *,
    placeholders: Collection[str] = PLACEHOLDER_NAMES,
    disposable_domains: Collection[str] = DISPOSABLE_EMAIL_DOMAINS,
    region: str = LIKELY_REGION,
) -> Verdict:
    """VERIFIED, or UNVERIFIED with every reason it is not (joined with "; ")."""
    reasons: list[str] = []
    if is_placeholder_name(lead.full_name, placeholders):
        reasons.append("placeholder name")
    if lead.email and is_disposable_email(lead.email, disposable_domains):
        reasons.append("disposable email domain")
    if not is_mobile(lead.phone, region):
        reasons.append("no mobile phone")
    if not (lead.company or lead.province or lead.city):
        reasons.append("no company, province or city")
    if reasons:
        return Verdict(UNVERIFIED, "; ".join(reasons))
    return Verdict(VERIFIED, "")
