"""Tag names: normalised (NFKC, case-folded, trimmed) and checked; the names of the system
tags the service keeps itself."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from crm_customers.lifecycle import rules as lifecycle_rules
from crm_platform.errors import FieldViolation, InvalidArgument

MAX_LEN = 32
MAX_PER_REQUEST = 20
SYSTEM = "system"
MANUAL = "manual"


def stage_tag(stage: str) -> str:
    """The system tag naming a lifecycle stage: AT_RISK -> ``stage-at-risk``."""
    return "stage-" + stage.lower().replace("_", "-")


# A customer carries exactly one of these: its current stage (lifecycle service).
STAGE_TAGS = frozenset(stage_tag(s) for s in lifecycle_rules.STAGES)
# Names only the system may use. Reserved up front, not only once the system tag exists:
# a user's first use would otherwise create the name as a manual tag.
RESERVED = STAGE_TAGS


def normalise(raw: str) -> str:
    """The stored form of a tag name, or ValueError saying what is wrong with it. Letters
    and digits of any script (CJK included), '-' and '_'; 1 to 32 characters."""
    name = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not 1 <= len(name) <= MAX_LEN:
        raise ValueError(f"a tag name has 1 to {MAX_LEN} characters")
    bad = sorted({ch for ch in name if not (ch.isalnum() or ch in "-_")})
    if bad:
        raise ValueError(
            "only letters, digits, '-' and '_' are allowed, not " + " ".join(repr(c) for c in bad)
        )
    return name


def normalise_all(raw: Sequence[str], field: str = "names") -> list[str]:
    """Distinct normalised names in the given order; every bad one reported at
    ``names.<index>``."""
    violations: list[FieldViolation] = []
    names: list[str] = []
    if not raw:
        violations.append(FieldViolation(field, "give at least one tag name"))
    if len(raw) > MAX_PER_REQUEST:
        violations.append(FieldViolation(field, f"at most {MAX_PER_REQUEST} names at a time"))
    for i, value in enumerate(raw):
        try:
            name = normalise(value)
        except ValueError as exc:
            violations.append(FieldViolation(f"{field}.{i}", str(exc)))
            continue
        if name not in names:
            names.append(name)
    if violations:
        raise InvalidArgument.from_violations(violations, reason="TAG_NAME_INVALID")
    return names
