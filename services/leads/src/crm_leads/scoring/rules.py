"""Lead scoring and grading: the rules document a tenant supplies, and the pure function that
scores a lead's facts with it. No I/O.

A score is the sum of the points of every criterion a lead meets (profile completeness, key
fields, behaviours), clamped to 0..100; the grade is the first of A, B, C whose threshold the
score reaches, else D."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from crm_platform.errors import FieldViolation, InvalidArgument, loc_to_field
from crm_platform.validation import InputModel

MIN_SCORE = 0
MAX_SCORE = 100
GRADES = ("A", "B", "C", "D")
LOWEST_GRADE = "D"

# Key-field rules may look at any profile field and at the capture channel.
KeyField = Literal[
    "full_name", "phone", "email", "company", "province", "city", "open_id", "source"
]
Points = Annotated[int, Field(ge=0, le=MAX_SCORE)]
# LeadFacts' fields that are the lead's own (the others are counts).
PROFILE_FIELDS = ("full_name", "phone", "email", "company", "province", "city", "open_id", "source")


@dataclass(frozen=True)
class LeadFacts:
    """What scoring looks at: the lead's fields, counts over its intents (enquiries) and over
    its logged activities."""

    full_name: str = ""
    phone: str = ""
    email: str = ""
    company: str = ""
    province: str = ""
    city: str = ""
    open_id: str = ""
    source: str = ""
    intent_count: int = 1
    campaign_responses: int = 0  # intents that named a campaign
    product_interests: int = 0  # intents that named a product
    visits: int = 0  # activities of kind visit


class _Document(InputModel):
    # Unknown keys are errors: a misspelt criterion must not silently score nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Tier(_Document):
    at_least: int = Field(ge=1, le=1_000_000)
    points: Points


class Completeness(_Document):
    """Points for each profile field that is filled in."""

    full_name: Points = 0
    phone: Points = 0
    email: Points = 0
    company: Points = 0
    province: Points = 0
    city: Points = 0
    open_id: Points = 0


class KeyFieldRule(_Document):
    field: KeyField
    # Negative points are a penalty (a low-quality source, say); the total is clamped.
    points: int = Field(ge=-MAX_SCORE, le=MAX_SCORE)
    # Omitted: the field only has to be non-empty. Given: its value must be one of these,
    # compared case-insensitively.
    any_of: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, min_length=1, max_length=500
    )
    _accepted: frozenset[str] | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        if self.any_of is not None:
            self._accepted = frozenset(v.casefold() for v in self.any_of)

    @property
    def accepted(self) -> frozenset[str] | None:
        """Casefolded ``any_of``; None: any non-empty value."""
        return self._accepted

    def matches(self, value: str) -> bool:
        return bool(value) and (self._accepted is None or value.casefold() in self._accepted)


class PerCount(_Document):
    """``points`` for each one counted, at most ``max_points`` in all."""

    points: Points
    max_points: Points

    @field_validator("max_points")
    @classmethod
    def _covers_one(cls, cap: int, info: ValidationInfo) -> int:
        points = info.data.get("points")  # absent: points itself was invalid
        if points is not None and cap < points:
            raise PydanticCustomError("cap_below_points", "must not be less than points")
        return cap


class Behaviours(_Document):
    """Tiers by count: the highest tier reached counts (not the sum of all reached)."""

    intent_count: list[Tier] = Field(default_factory=list, max_length=20)
    campaign_responses: list[Tier] = Field(default_factory=list, max_length=20)
    # Any enquiry that named a product.
    product_interest: Points = 0
    # Logged activities of kind visit. Optional, so documents stored before it existed read
    # (and are served) exactly as they were.
    visits: PerCount | None = None

    @field_validator("intent_count", "campaign_responses")
    @classmethod
    def _ascending(cls, tiers: list[Tier]) -> list[Tier]:
        if any(a.at_least >= b.at_least for a, b in pairwise(tiers)):
            raise PydanticCustomError("tiers_order", "at_least must be strictly ascending")
        return tiers


class Grades(_Document):
    """Lowest score of each grade; below C is D."""

    A: int = Field(ge=MIN_SCORE, le=MAX_SCORE)
    B: int = Field(ge=MIN_SCORE, le=MAX_SCORE)
    C: int = Field(ge=MIN_SCORE, le=MAX_SCORE)

    @model_validator(mode="after")
    def _descending(self) -> Grades:
        if not self.A > self.B > self.C:
            raise PydanticCustomError(
                "thresholds_order", "thresholds must be strictly descending: A > B > C"
            )
        return self


class ScoringRules(_Document):
    """A tenant's scoring rules document."""

    # The document format, so a later format can still read documents stored today.
    schema_version: Literal[1] = 1
    completeness: Completeness = Field(default_factory=Completeness)
    key_fields: list[KeyFieldRule] = Field(default_factory=list, max_length=50)
    behaviours: Behaviours = Field(default_factory=Behaviours)
    grades: Grades


class Scored(NamedTuple):
    score: int
    grade: str
    # Each criterion met, named by its path in the rules document: "completeness.phone +10".
    reasons: list[str]


DEFAULT_RULES = ScoringRules.model_validate(
    {
        "completeness": {
            "full_name": 5,
            "phone": 10,
            "email": 5,
            "company": 5,
            "province": 5,
            "city": 5,
            "open_id": 5,
        },
        "key_fields": [{"field": "company", "points": 10}],
        "behaviours": {
            "intent_count": [{"at_least": 2, "points": 10}, {"at_least": 3, "points": 20}],
            "campaign_responses": [
                {"at_least": 1, "points": 10},
                {"at_least": 3, "points": 15},
            ],
            "product_interest": 15,
        },
        "grades": {"A": 80, "B": 60, "C": 40},
    }
)


def parse_rules(document: object) -> ScoringRules:
    """The validated rules, or InvalidArgument naming every bad field by its path in the
    document (``grades``, ``key_fields.0.points``)."""
    try:
        return ScoringRules.model_validate(document)
    except ValidationError as exc:
        violations = [
            FieldViolation(
                loc_to_field(e["loc"]),
                "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
            )
            for e in exc.errors()
        ]
        raise InvalidArgument.from_violations(violations, reason="SCORING_RULES_INVALID") from None


def rules_json(rules: ScoringRules) -> dict[str, Any]:
    """The document as stored and served (omitted optional parts stay omitted)."""
    return rules.model_dump(mode="json", exclude_none=True)


def grade_for(score: int, grades: Grades) -> str:
    for grade, threshold in (("A", grades.A), ("B", grades.B), ("C", grades.C)):
        if score >= threshold:
            return grade
    return LOWEST_GRADE


def score(facts: LeadFacts, rules: ScoringRules) -> Scored:
    """Score and grade ``facts`` with ``rules``, with the reason for every point."""
    return Scorer(rules).score(facts)


class Scorer:
    """``rules`` resolved into plain tuples once: bulk imports score a million leads with
    one document, and walking pydantic models per lead would cost more than the scoring."""

    __slots__ = (
        "_behaviour_points",
        "_completeness",
        "_grades",
        "_key_fields",
        "_product_interest",
        "_tiers",
        "_visits",
    )

    def __init__(self, rules: ScoringRules) -> None:
        self._completeness = tuple((name, p) for name, p in rules.completeness if p)
        self._key_fields = tuple(
            (index, rule.field, rule.points, rule.accepted)
            for index, rule in enumerate(rules.key_fields)
            if rule.points
        )
        behaviours = rules.behaviours
        self._tiers = (
            ("intent_count", tuple(behaviours.intent_count)),
            ("campaign_responses", tuple(behaviours.campaign_responses)),
        )
        self._product_interest = behaviours.product_interest
        visits = behaviours.visits
        self._visits = (0, 0) if visits is None else (visits.points, visits.max_points)
        self._grades = (("A", rules.grades.A), ("B", rules.grades.B), ("C", rules.grades.C))
        # Behaviour points by (intents, campaign responses, any product interest, visits): a
        # handful of distinct counts across a whole import, so computed once each.
        self._behaviour_points: dict[tuple[int, int, bool, int], int] = {}

    def score(self, facts: LeadFacts, *, explain: bool = True) -> Scored:
        """With the reason for every point unless ``explain`` is off (bulk paths need the
        number, not a million reason lists)."""
        return self.score_profile(
            facts,
            intent_count=facts.intent_count,
            campaign_responses=facts.campaign_responses,
            product_interests=facts.product_interests,
            visits=facts.visits,
            explain=explain,
        )

    def score_profile(
        self,
        profile: object,
        *,
        intent_count: int,
        campaign_responses: int,
        product_interests: int,
        visits: int = 0,
        explain: bool = False,
    ) -> Scored:
        """``profile``: anything with LeadFacts' profile attributes (a NewLead, a row), so a
        bulk path scores without building a LeadFacts per lead."""
        reasons: list[str] | None = [] if explain else None
        if reasons is None:
            counts = (intent_count, campaign_responses, product_interests > 0, visits)
            behaviours = self._behaviour_points.get(counts)
            if behaviours is None:
                behaviours = self._behaviours(*counts, None)
                self._behaviour_points[counts] = behaviours
        else:
            behaviours = self._behaviours(
                intent_count, campaign_responses, product_interests, visits, reasons
            )
        total = self._profile(profile, reasons) + behaviours
        clamped = min(MAX_SCORE, max(MIN_SCORE, total))
        if clamped != total and reasons is not None:
            reasons.append(f"total {total} clamped to {clamped}")
        grade = next((g for g, at in self._grades if clamped >= at), LOWEST_GRADE)
        return Scored(clamped, grade, reasons or [])

    def _profile(self, facts: object, reasons: list[str] | None) -> int:
        total = 0
        for name, points in self._completeness:
            if getattr(facts, name):
                total += points
                if reasons is not None:
                    reasons.append(f"completeness.{name} +{points}")
        for index, field, points, accepted in self._key_fields:
            value = getattr(facts, field)
            if value and (accepted is None or value.casefold() in accepted):
                total += points
                if reasons is not None:
                    reasons.append(f"key_fields.{index} {field} {points:+d}")
        return total

    def _behaviours(
        self,
        intent_count: int,
        campaigns: int,
        products: int,
        visits: int,
        reasons: list[str] | None,
    ) -> int:
        total = 0
        for (name, tiers), count in zip(self._tiers, (intent_count, campaigns), strict=True):
            tier = _highest_reached(tiers, count)
            if tier is not None and tier.points:
                total += tier.points
                if reasons is not None:
                    reasons.append(f"behaviours.{name} >= {tier.at_least} +{tier.points}")
        if self._product_interest and products:
            total += self._product_interest
            if reasons is not None:
                reasons.append(f"behaviours.product_interest +{self._product_interest}")
        return total + self._visit_points(visits, reasons)

    def _visit_points(self, visits: int, reasons: list[str] | None) -> int:
        each, cap = self._visits
        earned = min(each * visits, cap)
        if earned and reasons is not None:
            capped = ", capped" if earned < each * visits else ""
            reasons.append(f"behaviours.visits {visits} x {each}{capped} +{earned}")
        return earned


def _highest_reached(tiers: Sequence[Tier], count: int) -> Tier | None:
    reached = None
    for tier in tiers:  # ascending, validated
        if count >= tier.at_least:
            reached = tier
    return reached
