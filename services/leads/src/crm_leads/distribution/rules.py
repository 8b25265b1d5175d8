"""Lead distribution (分发): the documents an org unit keeps, validated. No I/O.

Two documents:

- a unit's **distribution rules**: an ordered list of rules; the first whose ``match`` the
  lead meets picks one of the unit's children by its ``strategy``; when every target is full,
  inactive or excluded, its ``fallback`` rule is tried (a chain, never a cycle); a lead that
  no rule places stays in the unit's pool, flagged unmatched;
- a child's **profile**, kept by its parent: territories, product lines, tier, capacity,
  weight and active hours.

crm_leads.distribution.engine compiles both into a fast evaluator."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from crm_platform.errors import FieldViolation, InvalidArgument, loc_to_field
from crm_platform.validation import InputModel

MAX_RULES = 50
MAX_TARGETS = 5000
MAX_WEIGHT = 1000

Strategy = Literal["territory", "weighted_round_robin", "least_loaded", "priority"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # weekday()
# Province, city and sales-territory codes ("330000", "330100", "east-zj-01"), product
# lines, sources, tiers: short opaque codes, compared exactly.
Code = Annotated[str, Field(min_length=1, max_length=64)]
Codes = Annotated[list[Code], Field(min_length=1, max_length=MAX_TARGETS)]
Grade = Literal["A", "B", "C", "D"]
RuleName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
CustomKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")


@dataclass(frozen=True, slots=True)
class LeadFacts:
    """What distribution looks at. ``excluded``: units that rejected this lead; they are
    never offered it again, at any level of a cascade."""

    province: str = ""
    city: str = ""
    territory: str = ""
    product_line: str = ""
    source: str = ""
    grade: str = "D"
    score: int = 0
    custom: Mapping[str, str] = field(default_factory=dict)
    excluded: frozenset[str] = frozenset()


class _Document(InputModel):
    # Strict and closed: a misspelt condition must be an error, not a rule that matches all.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, str_strip_whitespace=True)


def _unit_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PydanticCustomError("unit_id", "must be an org unit id (a UUID)") from None


class CustomCondition(_Document):
    """Exactly one of ``equals`` and ``any_of``."""

    equals: Annotated[str, Field(max_length=200)] | None = None
    any_of: Annotated[list[Annotated[str, Field(max_length=200)]], Field(min_length=1)] | None = (
        None
    )

    @model_validator(mode="after")
    def _one_of(self) -> CustomCondition:
        if (self.equals is None) == (self.any_of is None):
            raise PydanticCustomError("custom_condition", "give exactly one of equals, any_of")
        return self

    def accepted(self) -> frozenset[str]:
        return frozenset([self.equals] if self.equals is not None else self.any_of or ())


class Match(_Document):
    """Every condition given must hold; an empty match matches every lead."""

    provinces: Codes | None = None
    cities: Codes | None = None
    territories: Codes | None = None
    product_lines: Codes | None = None
    sources: Codes | None = None
    grades: Annotated[list[Grade], Field(min_length=1)] | None = None
    score_min: Annotated[int, Field(ge=0, le=100)] | None = None
    score_max: Annotated[int, Field(ge=0, le=100)] | None = None
    custom: dict[CustomKey, CustomCondition] = Field(default_factory=dict, max_length=20)

    @model_validator(mode="after")
    def _score_range(self) -> Match:
        low, high = self.score_min, self.score_max
        if low is not None and high is not None and low > high:
            raise PydanticCustomError("score_range", "score_min must not exceed score_max")
        return self


class Target(_Document):
    unit_id: str
    # Overrides the profile's weight for this rule (weighted_round_robin).
    weight: Annotated[int, Field(ge=1, le=MAX_WEIGHT)] | None = None
    # priority strategy: lowest first; equal priorities keep the listed order.
    priority: Annotated[int, Field(ge=0, le=1000)] = 0

    @field_validator("unit_id")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return _unit_id(value)


class Rule(_Document):
    name: RuleName
    match: Match = Field(default_factory=Match)
    strategy: Strategy
    # Omitted: every child with a profile. Targets that are not (or no longer) children of
    # the unit are ignored by the engine; check_targets reports them when a document is saved.
    targets: Annotated[list[Target], Field(min_length=1, max_length=MAX_TARGETS)] | None = None
    # Only children of these tiers (profile.tier) are candidates.
    tiers: Codes | None = None
    # The rule tried when this one finds no available target; its own match is not checked.
    fallback: RuleName | None = None

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, targets: list[Target] | None) -> list[Target] | None:
        ids = [t.unit_id for t in targets or ()]
        if len(set(ids)) != len(ids):
            raise PydanticCustomError("targets_unique", "a unit is listed twice")
        return targets


class DistributionRules(_Document):
    """One org unit's distribution rules document."""

    # The document format, so a later format can still read documents stored today.
    schema_version: Literal[1] = 1
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    # What happens to a lead no rule places; the only choice today: it stays in this unit's
    # pool, flagged unmatched, for manual distribution.
    when_unmatched: Literal["stay_in_pool"] = "stay_in_pool"

    @model_validator(mode="after")
    def _names_and_fallbacks(self) -> DistributionRules:
        # ``field`` in the error context: parse_rules reports the violation at that path.
        by_name: dict[str, Rule] = {}
        for i, rule in enumerate(self.rules):
            if rule.name in by_name:
                raise PydanticCustomError(
                    "rule_name_unique",
                    "{name} names an earlier rule too",
                    {"name": rule.name, "field": f"rules.{i}.name"},
                )
            by_name[rule.name] = rule
        for i, rule in enumerate(self.rules):
            seen = {rule.name}
            step = rule.fallback
            while step is not None:
                if step not in by_name or step in seen:
                    raise PydanticCustomError(
                        "fallback",
                        "{fallback} is not a rule of this document"
                        if step not in by_name
                        else "the fallback chain loops back to {fallback}",
                        {"fallback": step, "field": f"rules.{i}.fallback"},
                    )
                seen.add(step)
                step = by_name[step].fallback
        return self


class Window(_Document):
    """``start`` inclusive, ``end`` exclusive, "HH:MM" in the tenant's timezone."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.fullmatch(value):
            raise PydanticCustomError("clock", "a time of day HH:MM (00:00 to 24:00)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if minutes(self.start) >= minutes(self.end):
            raise PydanticCustomError("window_order", "start must be before end")
        return self


class Profile(_Document):
    """A child unit's distribution profile, kept by its parent."""

    schema_version: Literal[1] = 1
    # Province, city or sales-territory codes the unit covers (territory strategy).
    territories: list[Code] = Field(default_factory=list, max_length=MAX_TARGETS)
    # Empty: sells every product line.
    product_lines: list[Code] = Field(default_factory=list, max_length=200)
    tier: Code | None = None
    # Leads it may receive per day / per week; omitted: no limit.
    daily_capacity: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    weekly_capacity: Annotated[int, Field(ge=0, le=70_000_000)] | None = None
    weight: Annotated[int, Field(ge=1, le=MAX_WEIGHT)] = 1
    # Omitted: always open. Given: open only in these windows; a day not listed is closed.
    active_hours: dict[Weekday, Annotated[list[Window], Field(max_length=8)]] | None = None
    active: bool = True


def minutes(clock: str) -> int:
    hours, mins = clock.split(":")
    return int(hours) * 60 + int(mins)


def _violations(exc: ValidationError) -> list[FieldViolation]:
    return [
        FieldViolation(
            e.get("ctx", {}).get("field") or loc_to_field(e["loc"]),
            "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
        )
        for e in exc.errors()
    ]


def parse_rules(document: object) -> DistributionRules:
    """The validated rules, or InvalidArgument naming every bad field by its path in the
    document (``rules.2.match.score_min``)."""
    try:
        return DistributionRules.model_validate(document)
    except ValidationError as exc:
        raise InvalidArgument.from_violations(
            _violations(exc), reason="DISTRIBUTION_RULES_INVALID"
        ) from None


def parse_profile(document: object) -> Profile:
    """The validated profile, or InvalidArgument naming every bad field by its path
    (``active_hours.mon.0.start``)."""
    try:
        return Profile.model_validate(document)
    except ValidationError as exc:
        raise InvalidArgument.from_violations(
            _violations(exc), reason="DISTRIBUTION_PROFILE_INVALID"
        ) from None


def check_targets(rules: DistributionRules, child_ids: frozenset[str]) -> None:
    """When a document is saved: every listed target must be a child of the unit."""
    violations = [
        FieldViolation(f"rules.{i}.targets.{j}.unit_id", "not a child of this org unit")
        for i, rule in enumerate(rules.rules)
        for j, target in enumerate(rule.targets or ())
        if target.unit_id not in child_ids
    ]
    if violations:
        raise InvalidArgument.from_violations(violations, reason="DISTRIBUTION_RULES_INVALID")


def document_json(document: DistributionRules | Profile) -> dict[str, Any]:
    """The document as stored and served (omitted optional parts stay omitted)."""
    return document.model_dump(mode="json", exclude_none=True)
