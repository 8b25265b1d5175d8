"""Tenant de-duplication rules: the document a tenant supplies, and the pure functions that
decide whether a capture duplicates an existing lead and what changes it brings. No I/O.

Two kinds of rule:

- *identity* rules (``keys`` among phone, email, open_id, always ``exact``): a capture
  duplicates a lead holding any one of those keys. The keys are claimed in ``lead_keys``, so
  these matches are found by a unique index, not by a query;
- *profile* rules (``keys`` among full_name, company, province, city, always with city):
  ``exact`` wants every key equal, ``fuzzy`` wants ``fuzzy.field`` similar enough and the
  ``fuzzy.same`` fields equal. Matched against the newest open leads of the same city.

Identity rules are tried first, then profile rules, each kind in document order; the first
rule that finds a duplicate decides the action."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from rapidfuzz import fuzz

from crm_platform.errors import FieldViolation, InvalidArgument, loc_to_field
from crm_platform.validation import InputModel

IDENTITY_KEYS = ("phone", "email", "open_id")
PROFILE_KEYS = ("full_name", "company", "province", "city")
# Fields a newer capture may replace under action "overwrite" (source is the channel of the
# enquiry, kept per intent, never a profile field to overwrite).
OVERWRITABLE = ("full_name", "phone", "email", "company", "province", "city", "open_id", "union_id")
# What a plain merge fills when the lead lacks it (never overwriting).
FILLABLE = ("company", "province", "city", "email", "phone", "open_id", "union_id")
MAX_RULES = 20

RuleKey = Literal["phone", "email", "open_id", "full_name", "company", "province", "city"]
FuzzyField = Literal["full_name", "company"]
SameField = Literal["province", "city"]
OverwriteField = Literal[
    "full_name", "phone", "email", "company", "province", "city", "open_id", "union_id"
]
Action = Literal["merge", "overwrite", "reject"]


class _Document(InputModel):
    # Unknown keys are errors: a misspelt option must not silently change nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


class FuzzySpec(_Document):
    field: FuzzyField
    # rapidfuzz token_sort_ratio of the normalised values, 0..100.
    threshold: float = Field(ge=0, le=100)
    # Fields that must be equal as well; city always (it bounds the candidates and the lock).
    same: list[SameField] = Field(min_length=1, max_length=2)

    @field_validator("same")
    @classmethod
    def _with_city(cls, same: list[SameField]) -> list[SameField]:
        if "city" not in same:
            raise _error("same_city", "must include city")
        if len(set(same)) != len(same):
            raise _error("duplicate", "fields must not repeat")
        return same


class DedupRule(_Document):
    # Field order matters: each validator sees the fields declared before it (info.data).
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    keys: list[RuleKey] = Field(min_length=1, max_length=len(IDENTITY_KEYS + PROFILE_KEYS))
    match: Literal["exact", "fuzzy"] = "exact"
    fuzzy: FuzzySpec | None = Field(default=None, validate_default=True)
    # Only leads created or updated within this many days are duplicates; None: any age.
    window_days: int | None = Field(default=None, ge=1, le=3650)
    # any: every lead of the tenant; channel: leads captured from the same source;
    # campaign: leads with an enquiry of the same (non-empty) campaign.
    scope: Literal["any", "channel", "campaign"] = "any"
    action: Action = "merge"
    # overwrite only: the fields a newer capture replaces; None: every field it supplies.
    overwrite_fields: list[OverwriteField] | None = Field(
        default=None, min_length=1, validate_default=True
    )

    @field_validator("keys")
    @classmethod
    def _keys(cls, keys: list[RuleKey]) -> list[RuleKey]:
        if len(set(keys)) != len(keys):
            raise _error("duplicate", "keys must not repeat")
        identity = set(keys) & set(IDENTITY_KEYS)
        if identity and identity != set(keys):
            raise _error("mixed_keys", "identity keys and profile fields cannot be mixed")
        if not identity and "city" not in keys:
            raise _error("profile_city", "a profile-field rule must include city")
        return keys

    @field_validator("match")
    @classmethod
    def _match(cls, match: str, info: ValidationInfo) -> str:
        keys = info.data.get("keys")
        if match == "fuzzy" and keys and set(keys) <= set(IDENTITY_KEYS):
            raise _error("identity_exact", "phone, email and open_id match exactly")
        return match

    @field_validator("fuzzy")
    @classmethod
    def _fuzzy(cls, spec: FuzzySpec | None, info: ValidationInfo) -> FuzzySpec | None:
        match, keys = info.data.get("match"), info.data.get("keys")
        if match == "fuzzy" and spec is None:
            raise _error("fuzzy_required", "required when match is fuzzy")
        if match == "exact" and spec is not None:
            raise _error("fuzzy_unused", "only allowed when match is fuzzy")
        if spec is not None and keys and set(keys) != {spec.field, *spec.same}:
            raise _error("fuzzy_keys", "the rule's keys must be fuzzy.field plus fuzzy.same")
        return spec

    @field_validator("overwrite_fields")
    @classmethod
    def _overwrite(
        cls, fields: list[OverwriteField] | None, info: ValidationInfo
    ) -> list[OverwriteField] | None:
        if fields is not None and info.data.get("action") != "overwrite":
            raise _error("overwrite_unused", "only allowed when action is overwrite")
        if fields is not None and len(set(fields)) != len(fields):
            raise _error("duplicate", "fields must not repeat")
        return fields

    @property
    def identity(self) -> bool:
        return self.keys[0] in IDENTITY_KEYS


class DedupRules(_Document):
    """A tenant's de-duplication rules document."""

    # The document format, so a later format can still read documents stored today.
    schema_version: Literal[1] = 1
    # Empty: no de-duplication at all (every capture creates a lead).
    rules: list[DedupRule] = Field(max_length=MAX_RULES)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[DedupRule]) -> list[DedupRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise _error("duplicate_name", f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return rules

    def identity_rules(self) -> list[DedupRule]:
        return [r for r in self.rules if r.identity]

    def profile_rules(self) -> list[DedupRule]:
        return [r for r in self.rules if not r.identity]


# Today's behaviour: same phone, email or open_id, any age, any channel, merged.
DEFAULT_RULES = DedupRules(
    rules=[DedupRule(name="system-keys", keys=["phone", "email", "open_id"])]
)


def parse_rules(document: object) -> DedupRules:
    """The validated rules, or InvalidArgument naming every bad field by its path in the
    document (``rules.0.fuzzy.threshold``)."""
    try:
        return DedupRules.model_validate(document)
    except ValidationError as exc:
        violations = [
            FieldViolation(
                loc_to_field(e["loc"]),
                "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
            )
            for e in exc.errors()
        ]
        raise InvalidArgument.from_violations(violations, reason="DEDUP_RULES_INVALID") from None


def rules_json(rules: DedupRules) -> dict[str, Any]:
    """The document as stored and served (omitted optional parts stay omitted)."""
    return rules.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class Probe:
    """A capture, as the rules see it."""

    full_name: str
    company: str
    province: str
    city: str
    source: str
    campaign: str

    def has(self, rule: DedupRule) -> bool:
        """A profile rule applies only to a capture with every one of its keys."""
        return all(getattr(self, key) for key in rule.keys)


@dataclass(frozen=True)
class Existing:
    """An existing lead, as the rules see it."""

    id: uuid.UUID
    full_name: str
    company: str
    province: str
    city: str
    source: str
    update_time: datetime
    # Whether one of its enquiries named the capture's campaign.
    same_campaign: bool


@dataclass(frozen=True)
class Duplicate:
    rule: DedupRule
    lead_id: uuid.UUID
    # What matched: "phone", "email", "open_id", or "company ~92" / "company =" for a
    # profile rule.
    matched: str
    # The capture's field that made it a duplicate (for a rejection's field violation).
    field: str


def window_start(rule: DedupRule, now: datetime) -> datetime | None:
    return None if rule.window_days is None else now - timedelta(days=rule.window_days)


def accepts(rule: DedupRule, probe: Probe, lead: Existing, now: datetime) -> bool:
    """Window and scope: a lead outside them is not a duplicate under this rule."""
    start = window_start(rule, now)
    if start is not None and lead.update_time < start:
        return False
    if rule.scope == "channel":
        return lead.source == probe.source
    if rule.scope == "campaign":
        return bool(probe.campaign) and lead.same_campaign
    return True


def identity_duplicate(
    rules: Iterable[DedupRule],
    held: Mapping[str, Existing],
    probe: Probe,
    now: datetime,
) -> Duplicate | None:
    """``held``: key kind -> the lead already holding the capture's key of that kind. The
    first rule covering a held key whose lead it accepts; the oldest such lead."""
    for rule in rules:
        found = [
            (lead.id, kind)
            for kind, lead in held.items()
            if kind in rule.keys and accepts(rule, probe, lead, now)
        ]
        if found:
            lead_id, kind = min(found)  # UUIDv7: the oldest lead
            return Duplicate(rule, lead_id, kind, kind)
    return None


# Legal forms carry no identity: "Acme Trading Co., Ltd" is "ACME Trading Company Limited".
_LEGAL_WORDS = frozenset(
    {"co", "company", "corp", "corporation", "inc", "incorporated", "llc", "ltd", "limited"}
    | {"plc", "gmbh", "group", "the"}
)
_LEGAL_ZH = ("股份有限公司", "有限责任公司", "有限公司", "集团", "公司")
_NOT_WORD = re.compile(r"[\W_]+")
_ADMIN_SUFFIX = re.compile(r"(市|省|自治区|特别行政区)$")


def normalise(value: str) -> str:
    """NFKC (full-width to ASCII), case-folded, punctuation as single spaces."""
    text = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def normalise_company(name: str, places: Sequence[str] = ()) -> str:
    """A company name without legal forms and without ``places`` (the capture's city and
    province, equal on both sides by then): "杭州阿里巴巴网络技术有限公司" and
    "阿里巴巴（杭州）网络技术有限公司" both become "阿里巴巴 网络技术"."""
    text = normalise(name)
    for form in _LEGAL_ZH:
        text = text.replace(form, " ")
    words = set(_LEGAL_WORDS)
    for place in places:
        bare = _ADMIN_SUFFIX.sub("", normalise(place))
        if bare.isascii():
            words.update(bare.split())  # whole words only: "ac" must not eat "acme"
        elif bare:
            text = text.replace(bare, " ")  # CJK has no word breaks
    return " ".join(w for w in text.split() if w not in words)


def ratio(ours: str, theirs: str) -> float:
    """0..100, ignoring word order (token_sort_ratio) and spacing (CJK names are written
    without spaces, so a removed place leaves one where the other side has none)."""
    return max(
        fuzz.token_sort_ratio(ours, theirs),
        fuzz.ratio(ours.replace(" ", ""), theirs.replace(" ", "")),
    )


def _comparable(field: str, value: str, probe: Probe) -> str:
    if field == "company":
        return normalise_company(value, (probe.city, probe.province))
    return normalise(value)


def similarity(rule: DedupRule, probe: Probe, lead: Existing) -> float | None:
    """How well ``lead`` matches under a profile rule (100 for exact), None if not at all."""
    spec = rule.fuzzy
    equal = rule.keys if spec is None else spec.same
    for field in equal:
        if _comparable(field, getattr(lead, field), probe) != _comparable(
            field, getattr(probe, field), probe
        ):
            return None
    if spec is None:
        return 100.0
    ours = _comparable(spec.field, getattr(probe, spec.field), probe)
    theirs = _comparable(spec.field, getattr(lead, spec.field), probe)
    if not ours or not theirs:
        return None
    score = ratio(ours, theirs)
    return score if score >= spec.threshold else None


def profile_duplicate(
    rule: DedupRule, probe: Probe, candidates: Iterable[Existing], now: datetime
) -> Duplicate | None:
    """The best-matching accepted candidate (the oldest among equals), if any."""
    best: tuple[float, uuid.UUID] | None = None
    for lead in candidates:
        if not accepts(rule, probe, lead, now):
            continue
        score = similarity(rule, probe, lead)
        if score is None:
            continue
        # Highest score first, then the oldest lead (smallest UUIDv7).
        if best is None or (score, -lead.id.int) > (best[0], -best[1].int):
            best = (score, lead.id)
    if best is None:
        return None
    if rule.fuzzy is None:
        field = next((k for k in rule.keys if k != "city"), "city")
        return Duplicate(rule, best[1], f"{field} =", field)
    return Duplicate(rule, best[1], f"{rule.fuzzy.field} ~{best[0]:.0f}", rule.fuzzy.field)


def changes(
    action: Action,
    fields: Sequence[str] | None,
    current: Mapping[str, str],
    supplied: Mapping[str, str],
) -> dict[str, tuple[str, str]]:
    """field -> (old, new) a duplicate capture brings: a merge fills blank fields only; an
    overwrite replaces ``fields`` (default every overwritable field) with non-empty newer
    values."""
    if action == "overwrite":
        names: Sequence[str] = OVERWRITABLE if fields is None else fields
        return {
            name: (current[name], supplied[name])
            for name in names
            if supplied[name] and supplied[name] != current[name]
        }
    return {
        name: (current[name], supplied[name])
        for name in FILLABLE
        if not current[name] and supplied[name]
    }
