"""The pure scoring engine: rules documents, their validation, scores, grades and reasons."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_leads.scoring.rules import (
    DEFAULT_RULES,
    GRADES,
    MAX_SCORE,
    MIN_SCORE,
    Completeness,
    KeyField,
    LeadFacts,
    Scorer,
    ScoringRules,
    grade_for,
    parse_rules,
    rules_json,
    score,
)
from crm_platform.errors import InvalidArgument

GRADES_DOC = {"A": 80, "B": 60, "C": 40}
RICH = LeadFacts(
    full_name="Zhang San",
    phone="+8613800138000",
    email="zs@example.com",
    company="Acme",
    province="Shanghai",
    city="Shanghai",
    open_id="o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
    source="web",
    intent_count=1,
    campaign_responses=1,
    product_interests=1,
)


def rules(**doc: Any) -> ScoringRules:
    return parse_rules({"grades": GRADES_DOC, **doc})


def violations(doc: object) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_rules(doc)
    assert caught.value.reason == "SCORING_RULES_INVALID"
    assert caught.value.http_status == 422
    return {v.field: v.description for v in caught.value.violations}


# Default rules


def test_default_rules_grade_a_sparse_lead_d() -> None:
    scored = score(LeadFacts(full_name="Li", phone="+8613900139000"), DEFAULT_RULES)
    assert scored == (15, "D", ["completeness.full_name +5", "completeness.phone +10"])


def test_default_rules_grade_a_rich_lead_b() -> None:
    scored = score(RICH, DEFAULT_RULES)
    assert (scored.score, scored.grade) == (75, "B")
    assert "key_fields.0 company +10" in scored.reasons
    assert "behaviours.campaign_responses >= 1 +10" in scored.reasons
    assert "behaviours.product_interest +15" in scored.reasons


def test_default_rules_reward_repeat_enquiries() -> None:
    again = LeadFacts(**{**RICH.__dict__, "intent_count": 2})
    assert score(again, DEFAULT_RULES)[:2] == (85, "A")


def test_default_rules_round_trip_as_a_document() -> None:
    assert parse_rules(rules_json(DEFAULT_RULES)) == DEFAULT_RULES


# Criteria


def test_completeness_counts_only_filled_fields() -> None:
    r = rules(completeness={"phone": 10, "email": 7, "company": 0})
    assert score(LeadFacts(phone="+86139", company="Acme"), r) == (
        10,
        "D",
        ["completeness.phone +10"],
    )


def test_key_field_present() -> None:
    r = rules(key_fields=[{"field": "company", "points": 10}])
    assert score(LeadFacts(company="Acme"), r).score == 10
    assert score(LeadFacts(), r).score == 0


def test_key_field_in_a_list_is_case_insensitive() -> None:
    r = rules(key_fields=[{"field": "province", "points": 5, "any_of": ["Shanghai", "北京"]}])
    assert score(LeadFacts(province="SHANGHAI"), r).reasons == ["key_fields.0 province +5"]
    assert score(LeadFacts(province="北京"), r).score == 5
    assert score(LeadFacts(province="Zhejiang"), r).score == 0
    assert score(LeadFacts(province=""), r).score == 0


def test_negative_key_field_points_are_a_penalty_clamped_at_zero() -> None:
    r = rules(
        completeness={"phone": 10},
        key_fields=[{"field": "source", "points": -30, "any_of": ["cold_list"]}],
    )
    scored = score(LeadFacts(phone="+86139", source="cold_list"), r)
    assert scored == (
        0,
        "D",
        ["completeness.phone +10", "key_fields.0 source -30", "total -20 clamped to 0"],
    )


def test_total_is_clamped_at_100() -> None:
    r = rules(completeness={"phone": 100}, key_fields=[{"field": "phone", "points": 50}])
    scored = score(LeadFacts(phone="+86139"), r)
    assert (scored.score, scored.grade) == (100, "A")
    assert scored.reasons[-1] == "total 150 clamped to 100"


def test_only_the_highest_tier_reached_counts() -> None:
    r = rules(
        behaviours={"intent_count": [{"at_least": 2, "points": 10}, {"at_least": 5, "points": 25}]}
    )
    assert score(LeadFacts(intent_count=1), r).score == 0
    assert score(LeadFacts(intent_count=2), r).score == 10
    assert score(LeadFacts(intent_count=4), r).score == 10
    assert score(LeadFacts(intent_count=9), r).reasons == ["behaviours.intent_count >= 5 +25"]


def test_campaign_responses_and_product_interest() -> None:
    r = rules(
        behaviours={
            "campaign_responses": [{"at_least": 2, "points": 20}],
            "product_interest": 15,
        }
    )
    assert score(LeadFacts(campaign_responses=1), r).score == 0
    assert score(LeadFacts(campaign_responses=2), r).score == 20
    assert score(LeadFacts(product_interests=3), r).reasons == ["behaviours.product_interest +15"]


def test_visits_earn_points_each_up_to_the_cap() -> None:
    r = rules(behaviours={"visits": {"points": 10, "max_points": 25}})
    assert score(LeadFacts(visits=0), r).score == 0
    assert score(LeadFacts(visits=2), r).reasons == ["behaviours.visits 2 x 10 +20"]
    capped = score(LeadFacts(visits=7), r)
    assert (capped.score, capped.reasons) == (25, ["behaviours.visits 7 x 10, capped +25"])
    # The bulk path (no reasons, memoised by counts) agrees.
    scorer = Scorer(r)
    assert [scorer.score(LeadFacts(visits=n), explain=False).score for n in (0, 1, 2, 3)] == [
        0,
        10,
        20,
        25,
    ]


def test_documents_without_visits_read_serve_and_score_as_before() -> None:
    document = {"behaviours": {"product_interest": 15}, "grades": GRADES_DOC}
    r = parse_rules(document)
    assert r.behaviours.visits is None
    assert rules_json(r)["behaviours"] == {
        "intent_count": [],
        "campaign_responses": [],
        "product_interest": 15,
    }
    assert score(LeadFacts(visits=9, product_interests=1), r) == score(
        LeadFacts(product_interests=1), r
    )
    assert score(RICH, DEFAULT_RULES) == score(replace(RICH, visits=5), DEFAULT_RULES)


def test_visit_rules_are_validated_naming_the_field() -> None:
    def visits(rule: object) -> dict[str, str]:
        return violations({"grades": GRADES_DOC, "behaviours": {"visits": rule}})

    assert visits({"points": 10, "max_points": 5}) == {
        "behaviours.visits.max_points": "must not be less than points"
    }
    assert set(visits({"points": -1, "max_points": 101, "each": 1})) == {
        "behaviours.visits.points",
        "behaviours.visits.max_points",
        "behaviours.visits.each",
    }
    assert set(visits({"points": 5})) == {"behaviours.visits.max_points"}
    assert set(visits(5)) == {"behaviours.visits"}


@pytest.mark.parametrize(
    ("value", "grade"),
    [(100, "A"), (80, "A"), (79, "B"), (60, "B"), (59, "C"), (40, "C"), (39, "D"), (0, "D")],
)
def test_grade_thresholds_are_inclusive(value: int, grade: str) -> None:
    assert grade_for(value, DEFAULT_RULES.grades) == grade


def test_minimal_document_gets_defaults() -> None:
    r = rules()
    assert r.schema_version == 1
    assert r.completeness == Completeness()
    assert score(RICH, r) == (0, "D", [])


# Invalid documents: every violation at once, each named by its path


def test_thresholds_must_be_strictly_descending() -> None:
    assert violations({"grades": {"A": 60, "B": 60, "C": 40}}) == {
        "grades": "thresholds must be strictly descending: A > B > C"
    }
    assert "grades" in violations({"grades": {"A": 30, "B": 60, "C": 40}})


def test_unknown_fields_are_named() -> None:
    found = violations(
        {
            "grades": GRADES_DOC,
            "bonus": 5,
            "completeness": {"wechat": 5},
            "key_fields": [{"field": "company", "points": 1, "when": "always"}],
        }
    )
    assert found == {
        "bonus": "unknown field",
        "completeness.wechat": "unknown field",
        "key_fields.0.when": "unknown field",
    }


def test_negative_points_only_where_allowed() -> None:
    found = violations(
        {
            "grades": GRADES_DOC,
            "completeness": {"phone": -5},
            "behaviours": {
                "intent_count": [{"at_least": 2, "points": -1}],
                "product_interest": -3,
            },
            "key_fields": [{"field": "source", "points": -5}],  # allowed: a penalty
        }
    )
    assert set(found) == {
        "completeness.phone",
        "behaviours.intent_count.0.points",
        "behaviours.product_interest",
    }
    assert "greater than or equal to 0" in found["completeness.phone"]


def test_other_invalid_parts_are_named() -> None:
    found = violations(
        {
            "schema_version": 2,
            "completeness": {"email": 101},
            "key_fields": [
                {"field": "salary", "points": 5},
                {"field": "province", "points": 5, "any_of": []},
            ],
            "behaviours": {
                "campaign_responses": [
                    {"at_least": 3, "points": 5},
                    {"at_least": 3, "points": 9},
                ],
                "intent_count": [{"at_least": 0, "points": 5}],
            },
        }
    )
    assert set(found) == {
        "schema_version",
        "completeness.email",
        "key_fields.0.field",
        "key_fields.1.any_of",
        "behaviours.campaign_responses",
        "behaviours.intent_count.0.at_least",
        "grades",
    }
    assert found["behaviours.campaign_responses"] == "at_least must be strictly ascending"
    assert found["grades"] == "Field required"


def test_a_document_must_be_an_object() -> None:
    assert list(violations([1, 2])) == ["body"]


# Properties

TEXT = st.sampled_from(["", "Acme", "Shanghai", "shanghai", "北京", "web", "cold_list"])
POINTS = st.integers(0, MAX_SCORE)


def _tiers() -> st.SearchStrategy[list[dict[str, int]]]:
    return st.lists(
        st.tuples(st.integers(1, 30), POINTS), max_size=4, unique_by=lambda t: t[0]
    ).map(lambda tiers: [{"at_least": a, "points": p} for a, p in sorted(tiers)])


RULE_DOCUMENTS = st.fixed_dictionaries(
    {
        "grades": st.lists(st.integers(MIN_SCORE, MAX_SCORE), min_size=3, max_size=3, unique=True)
        .map(lambda t: sorted(t, reverse=True))
        .map(lambda t: dict(zip("ABC", t, strict=True)))
    },
    optional={
        "completeness": st.dictionaries(st.sampled_from(list(Completeness.model_fields)), POINTS),
        "key_fields": st.lists(
            st.fixed_dictionaries(
                {
                    "field": st.sampled_from(get_args(KeyField)),
                    "points": st.integers(-MAX_SCORE, MAX_SCORE),
                },
                optional={"any_of": st.lists(TEXT.filter(bool), min_size=1, max_size=3)},
            ),
            max_size=6,
        ),
        "behaviours": st.fixed_dictionaries(
            {},
            optional={
                "intent_count": _tiers(),
                "campaign_responses": _tiers(),
                "product_interest": POINTS,
                "visits": st.lists(POINTS, min_size=2, max_size=2)
                .map(sorted)
                .map(lambda p: {"points": p[0], "max_points": p[1]}),
            },
        ),
    },
)
FACTS = st.builds(
    LeadFacts,
    full_name=TEXT,
    phone=TEXT,
    email=TEXT,
    company=TEXT,
    province=TEXT,
    city=TEXT,
    open_id=TEXT,
    source=TEXT,
    intent_count=st.integers(1, 40),
    campaign_responses=st.integers(0, 40),
    product_interests=st.integers(0, 40),
    visits=st.integers(0, 40),
)
REASON_POINTS = re.compile(r" ([+-]\d+)$")


@given(RULE_DOCUMENTS, FACTS)
def test_score_is_within_bounds_and_explained_by_its_reasons(
    document: dict[str, Any], facts: LeadFacts
) -> None:
    r = parse_rules(document)
    scored = score(facts, r)
    assert MIN_SCORE <= scored.score <= MAX_SCORE
    assert scored.grade == grade_for(scored.score, r.grades)
    earned = [REASON_POINTS.search(reason) for reason in scored.reasons]
    total = sum(int(m.group(1)) for m in earned if m is not None)
    assert scored.score == min(MAX_SCORE, max(MIN_SCORE, total))
    assert Scorer(r).score(facts, explain=False)[:2] == scored[:2]
    assert parse_rules(rules_json(r)) == r


@given(RULE_DOCUMENTS, st.integers(MIN_SCORE, MAX_SCORE), st.integers(MIN_SCORE, MAX_SCORE))
def test_grade_is_monotone_in_score(document: dict[str, Any], low: int, high: int) -> None:
    grades = parse_rules(document).grades
    low, high = sorted((low, high))
    # A higher score never gets a worse grade (GRADES is best first).
    assert GRADES.index(grade_for(high, grades)) <= GRADES.index(grade_for(low, grades))
