"""The pure distribution engine: rules and profile documents, their validation, each
strategy, fallback chains, the unmatched default, active hours, exclusions, cascades, and
(hypothesis) the invariants over random trees, rules and lead streams."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_leads.distribution.engine import (
    Decision,
    DistributionState,
    Distributor,
    Load,
    Moment,
    cascade,
    moment_at,
    smooth_schedule,
)
from crm_leads.distribution.rules import (
    DistributionRules,
    LeadFacts,
    Match,
    Profile,
    check_targets,
    document_json,
    parse_profile,
    parse_rules,
)
from crm_platform.errors import InvalidArgument

WED_10 = Moment(weekday=2, minute=600)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def uid(n: int) -> str:
    return str(uuid.UUID(int=n))


HQ, R1, R2, D1, D2, D3, D4 = (uid(n) for n in range(1, 8))


def distributor(unit: str, rules: list[dict[str, Any]], profiles: dict[str, Any]) -> Distributor:
    return Distributor(
        unit,
        parse_rules({"rules": rules}),
        {k: parse_profile(v) for k, v in profiles.items()},
    )


def run(
    d: Distributor, leads: list[LeadFacts], state: DistributionState | None = None
) -> list[Any]:
    return [x.target_unit_id for x in d.decide_many(leads, state or DistributionState(), at=WED_10)]


# Documents


def test_rules_document_round_trips_with_defaults() -> None:
    doc = {
        "rules": [
            {
                "name": "zj-ev",
                "match": {"provinces": ["330000"], "product_lines": ["ev"], "score_min": 60},
                "strategy": "territory",
                "fallback": "spread",
            },
            {"name": "spread", "strategy": "weighted_round_robin", "targets": [{"unit_id": D1}]},
        ]
    }
    rules = parse_rules(doc)
    assert rules.schema_version == 1
    assert rules.when_unmatched == "stay_in_pool"
    assert document_json(rules)["rules"][1]["targets"] == [{"unit_id": D1, "priority": 0}]


def test_unit_ids_are_canonicalised() -> None:
    rules = parse_rules(
        {"rules": [{"name": "a", "strategy": "priority", "targets": [{"unit_id": D1.upper()}]}]}
    )
    assert rules.rules[0].targets is not None
    assert rules.rules[0].targets[0].unit_id == D1


def rule_violations(doc: object) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_rules(doc)
    assert caught.value.reason == "DISTRIBUTION_RULES_INVALID"
    return {v.field: v.description for v in caught.value.violations}


def profile_violations(doc: object) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_profile(doc)
    assert caught.value.reason == "DISTRIBUTION_PROFILE_INVALID"
    return {v.field: v.description for v in caught.value.violations}


def one_rule(**rule: Any) -> dict[str, Any]:
    return {"rules": [{"name": "r", "strategy": "territory", **rule}]}


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"rules": [], "colour": "red"}, "colour"),
        ({"schema_version": 2}, "schema_version"),
        (one_rule(strategy="random"), "rules.0.strategy"),
        (one_rule(name="Bad Name"), "rules.0.name"),
        (one_rule(match={"provinces": []}), "rules.0.match.provinces"),
        (one_rule(match={"province": ["330000"]}), "rules.0.match.province"),
        (one_rule(match={"grades": ["E"]}), "rules.0.match.grades.0"),
        (one_rule(match={"score_min": "50"}), "rules.0.match.score_min"),  # strict: no coercion
        (one_rule(match={"score_min": 80, "score_max": 20}), "rules.0.match"),
        (one_rule(match={"score_max": 101}), "rules.0.match.score_max"),
        (
            one_rule(match={"custom": {"segment": {"equals": "a", "any_of": ["b"]}}}),
            "rules.0.match.custom.segment",
        ),
        (one_rule(targets=[{"unit_id": "dealer-1"}]), "rules.0.targets.0.unit_id"),
        (one_rule(targets=[{"unit_id": D1, "weight": 0}]), "rules.0.targets.0.weight"),
        (one_rule(targets=[{"unit_id": D1}, {"unit_id": D1}]), "rules.0.targets"),
        (one_rule(targets=[]), "rules.0.targets"),
        (one_rule(fallback="nowhere"), "rules.0.fallback"),
        ({"rules": [{"name": "a", "strategy": "priority"}] * 2}, "rules.1.name"),
        (
            {
                "rules": [
                    {"name": "a", "strategy": "priority", "fallback": "b"},
                    {"name": "b", "strategy": "priority", "fallback": "a"},
                ]
            },
            "rules.0.fallback",
        ),
        ({"when_unmatched": "drop"}, "when_unmatched"),
    ],
)
def test_bad_rules_document_names_the_field(doc: object, field: str) -> None:
    assert field in rule_violations(doc)


def test_fallback_errors_say_which_rule() -> None:
    cycle = {
        "rules": [
            {"name": "a", "strategy": "priority", "fallback": "b"},
            {"name": "b", "strategy": "priority", "fallback": "a"},
        ]
    }
    assert rule_violations(cycle) == {"rules.0.fallback": "the fallback chain loops back to a"}
    assert rule_violations(one_rule(fallback="nowhere")) == {
        "rules.0.fallback": "nowhere is not a rule of this document"
    }


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"capacity": 5}, "capacity"),
        ({"daily_capacity": -1}, "daily_capacity"),
        ({"weight": 0}, "weight"),
        ({"weight": 2.5}, "weight"),
        ({"active": "yes"}, "active"),
        ({"territories": [""]}, "territories.0"),
        ({"active_hours": {"monday": []}}, "active_hours.monday.[key]"),
        (
            {"active_hours": {"mon": [{"start": "9:00", "end": "18:00"}]}},
            "active_hours.mon.0.start",
        ),
        ({"active_hours": {"mon": [{"start": "18:00", "end": "09:00"}]}}, "active_hours.mon.0"),
        ({"active_hours": {"tue": [{"start": "09:00"}]}}, "active_hours.tue.0.end"),
    ],
)
def test_bad_profile_names_the_field(doc: object, field: str) -> None:
    assert field in profile_violations(doc)


def test_check_targets_names_targets_that_are_not_children() -> None:
    rules = parse_rules(
        {
            "rules": [
                {"name": "a", "strategy": "priority", "targets": [{"unit_id": D1}]},
                {
                    "name": "b",
                    "strategy": "priority",
                    "targets": [{"unit_id": D1}, {"unit_id": D3}],
                },
            ]
        }
    )
    check_targets(rules, frozenset({D1, D3}))
    with pytest.raises(InvalidArgument) as caught:
        check_targets(rules, frozenset({D1}))
    assert [v.field for v in caught.value.violations] == ["rules.1.targets.1.unit_id"]


# Strategies

CITY_DEALERS = {
    D1: {"territories": ["330100"], "product_lines": ["ev", "suv"]},
    D2: {"territories": ["330100"], "product_lines": ["suv"]},
    D3: {"territories": ["330000"]},  # the whole province
}


def test_territory_prefers_city_then_least_loaded_then_province() -> None:
    d = distributor(R1, [{"name": "geo", "strategy": "territory"}], CITY_DEALERS)
    hangzhou = LeadFacts(province="330000", city="330100")
    ningbo = LeadFacts(province="330000", city="330200")
    assert run(d, [hangzhou] * 4 + [ningbo]) == [D1, D2, D1, D2, D3]


def test_territory_respects_product_lines_and_falls_back_to_province() -> None:
    d = distributor(R1, [{"name": "geo", "strategy": "territory"}], CITY_DEALERS)
    ev = LeadFacts(province="330000", city="330100", product_line="ev")
    truck = LeadFacts(province="330000", city="330100", product_line="truck")
    assert run(d, [ev, ev, truck]) == [D1, D1, D3]


def test_territory_code_beats_city() -> None:
    profiles = {D1: {"territories": ["330100"]}, D2: {"territories": ["hz-west"]}}
    d = distributor(R1, [{"name": "geo", "strategy": "territory"}], profiles)
    assert run(d, [LeadFacts(city="330100", territory="hz-west")]) == [D2]


def test_weighted_round_robin_is_smooth_and_follows_weights() -> None:
    profiles = {D1: {"weight": 4}, D2: {}, D3: {}}
    d = distributor(R1, [{"name": "rr", "strategy": "weighted_round_robin"}], profiles)
    order = run(d, [LeadFacts()] * 12)
    assert Counter(order) == {D1: 8, D2: 2, D3: 2}
    # D1's turns are spread out, not four in a row.
    assert order[:6] == [D1, D1, D2, D3, D1, D1]


def test_rule_weight_overrides_profile_weight_and_cursor_lives_in_state() -> None:
    rule = {
        "name": "rr",
        "strategy": "weighted_round_robin",
        "targets": [{"unit_id": D1, "weight": 1}, {"unit_id": D2, "weight": 3}],
    }
    d = distributor(R1, [rule], {D1: {"weight": 9}, D2: {}})
    state = DistributionState()
    first = run(d, [LeadFacts()] * 2, state)
    second = run(d, [LeadFacts()] * 2, state)  # continues where the first batch stopped
    assert Counter(first + second) == {D1: 1, D2: 3}
    assert state.cursors == {f"{R1}:rr": 0}


def test_least_loaded_uses_open_load_per_capacity_ties_in_order() -> None:
    profiles = {D1: {"daily_capacity": 10}, D2: {"daily_capacity": 40}, D3: {"daily_capacity": 20}}
    d = distributor(R1, [{"name": "ll", "strategy": "least_loaded"}], profiles)
    state = DistributionState(
        {D1: Load(open_leads=5), D2: Load(open_leads=8), D3: Load(open_leads=4)}
    )
    # Ratios 0.5, 0.2, 0.2: D2 and D3 tie, D2 comes first by id.
    assert run(d, [LeadFacts()] * 3, state) == [D2, D3, D2]


def test_priority_takes_the_lowest_priority_with_room() -> None:
    rule = {
        "name": "p",
        "strategy": "priority",
        "targets": [
            {"unit_id": D1, "priority": 2},
            {"unit_id": D2, "priority": 1},
            {"unit_id": D3, "priority": 1},
        ],
    }
    d = distributor(R1, [rule], {D1: {}, D2: {"daily_capacity": 1}, D3: {"daily_capacity": 1}})
    assert run(d, [LeadFacts()] * 4) == [D2, D3, D1, D1]


def test_tiers_restrict_the_candidates() -> None:
    profiles = {D1: {"tier": "gold"}, D2: {"tier": "silver"}, D3: {}}
    d = distributor(R1, [{"name": "gold", "strategy": "least_loaded", "tiers": ["gold"]}], profiles)
    assert run(d, [LeadFacts()] * 2) == [D1, D1]


# Capacity, fallbacks, the unmatched default


def test_daily_and_weekly_capacity_are_never_exceeded() -> None:
    profiles = {D1: {"daily_capacity": 3, "weight": 5}, D2: {"weekly_capacity": 2}}
    d = distributor(R1, [{"name": "rr", "strategy": "weighted_round_robin"}], profiles)
    state = DistributionState({D2: Load(today=0, week=1)})
    decisions = d.decide_many([LeadFacts()] * 6, state, at=WED_10)
    assert Counter(x.target_unit_id for x in decisions) == {D1: 3, D2: 1, None: 2}
    assert decisions[-1] == Decision(
        None, "rr", "rule rr: no target available (full, closed, inactive or excluded)", True
    )
    assert (state.loads[D1].today, state.loads[D2].week) == (3, 2)


def test_fallback_chain_is_followed_in_order() -> None:
    rules = [
        {
            "name": "vip",
            "match": {"grades": ["A"]},
            "strategy": "priority",
            "targets": [{"unit_id": D1}],
            "fallback": "closed",
        },
        {
            "name": "closed",
            "match": {"sources": ["never"]},
            "strategy": "priority",
            "targets": [{"unit_id": D2}],
            "fallback": "rest",
        },
        {
            "name": "rest",
            "match": {"sources": ["never"]},
            "strategy": "least_loaded",
            "targets": [{"unit_id": D3}],
        },
    ]
    profiles = {D1: {"daily_capacity": 1}, D2: {"active": False}, D3: {}}
    d = distributor(R1, rules, profiles)
    state = DistributionState()
    first, second = d.decide_many([LeadFacts(grade="A")] * 2, state, at=WED_10)
    assert first == Decision(D1, "vip", "rule vip", False)
    assert second == Decision(D3, "rest", "rule vip, fallback rest", False)
    # A rule used only as a fallback is still matched directly when its match holds.
    assert d.decide(LeadFacts(source="never"), state, at=WED_10).rule_name == "rest"


def test_no_matching_rule_leaves_the_lead_in_the_pool_flagged() -> None:
    d = distributor(
        R1,
        [{"name": "ev", "match": {"product_lines": ["ev"]}, "strategy": "territory"}],
        CITY_DEALERS,
    )
    state = DistributionState()
    decision = d.decide(LeadFacts(product_line="suv"), state, at=WED_10)
    assert decision == Decision(None, None, "no rule matched", True)
    assert state.loads == {}


def test_empty_rules_match_nothing() -> None:
    d = Distributor(R1, DistributionRules(), {D1: Profile()})
    assert d.decide(LeadFacts(), DistributionState(), at=WED_10).unmatched


def test_match_conditions_combine() -> None:
    rules: list[dict[str, Any]] = [
        {
            "name": "rich",
            "strategy": "priority",
            "targets": [{"unit_id": D1}],
            "match": {
                "cities": ["330100"],
                "sources": ["web"],
                "score_min": 50,
                "score_max": 90,
                "custom": {"segment": {"any_of": ["fleet", "rental"]}},
            },
        },
        {"name": "rest", "strategy": "priority", "targets": [{"unit_id": D2}]},
    ]
    d = distributor(R1, rules, {D1: {}, D2: {}})
    good = LeadFacts(city="330100", source="web", score=50, custom={"segment": "rental"})
    assert run(
        d,
        [
            good,
            LeadFacts(city="330100", source="web", score=91, custom={"segment": "fleet"}),
            LeadFacts(city="330100", source="web", score=60),
            LeadFacts(city="330200", source="web", score=60, custom={"segment": "fleet"}),
        ],
    ) == [D1, D2, D2, D2]


def test_targets_that_are_not_children_are_ignored() -> None:
    rule = {"name": "p", "strategy": "priority", "targets": [{"unit_id": R2}, {"unit_id": D1}]}
    d = distributor(R1, [rule], {D1: {}})
    assert d.children == {D1}
    assert run(d, [LeadFacts()]) == [D1]


# Active hours and exclusions


def test_active_hours_close_units_outside_their_windows() -> None:
    hours = {
        "active_hours": {
            "mon": [{"start": "09:00", "end": "12:00"}, {"start": "22:00", "end": "24:00"}]
        }
    }
    d = distributor(R1, [{"name": "p", "strategy": "priority"}], {D1: hours, D2: {}})
    state = DistributionState()

    def at(weekday: int, minute: int) -> str | None:
        return d.decide(LeadFacts(), state, at=Moment(weekday, minute)).target_unit_id

    assert at(0, 9 * 60) == D1
    assert at(0, 12 * 60) == D2  # end is exclusive
    assert at(0, 23 * 60 + 59) == D1
    assert at(1, 10 * 60) == D2  # Tuesday is not listed: closed


def test_moment_is_local_time_in_the_tenants_timezone() -> None:
    utc_sunday_night = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    assert moment_at(utc_sunday_night, ZoneInfo("Asia/Shanghai")) == Moment(0, 7 * 60 + 30)


def test_inactive_unit_never_receives() -> None:
    d = distributor(
        R1, [{"name": "rr", "strategy": "weighted_round_robin"}], {D1: {"active": False}, D2: {}}
    )
    assert set(run(d, [LeadFacts()] * 5)) == {D2}


def test_a_unit_that_rejected_the_lead_is_not_offered_it_again() -> None:
    d = distributor(R1, [{"name": "geo", "strategy": "territory"}], CITY_DEALERS)
    lead = LeadFacts(province="330000", city="330100", excluded=frozenset({D1}))
    assert run(d, [lead] * 3) == [D2, D2, D2]
    only_d1 = LeadFacts(
        province="330000", city="330100", product_line="ev", excluded=frozenset({D1})
    )
    assert run(d, [only_d1]) == [D3]  # the province-level dealer, not the rejecter


# Cascade


def test_cascade_goes_down_each_level_with_rules() -> None:
    hq = distributor(
        HQ,
        [{"name": "geo", "strategy": "territory"}],
        {R1: {"territories": ["330000"]}, R2: {"territories": ["320000"]}},
    )
    r1 = distributor(R1, [{"name": "geo", "strategy": "territory"}], CITY_DEALERS)
    r2 = distributor(
        R2,
        [{"name": "ev", "match": {"product_lines": ["ev"]}, "strategy": "least_loaded"}],
        {D4: {}},
    )
    levels = {HQ: hq, R1: r1, R2: r2}
    state = DistributionState()
    path = cascade(
        LeadFacts(province="330000", city="330100"), state, start=HQ, distributors=levels, at=WED_10
    )
    assert [x.target_unit_id for x in path] == [R1, D1]
    stuck = cascade(LeadFacts(province="320000"), state, start=HQ, distributors=levels, at=WED_10)
    assert [x.target_unit_id for x in stuck] == [R2, None]
    assert stuck[-1].unmatched
    assert state.loads[R2].today == 1  # the region holds it in its pool


# Properties

CODES = ["p1", "p2", "c1", "c2", "c3"]
PRODUCTS = ["ev", "suv"]


Tree = tuple[dict[str, str | None], dict[str, Distributor], dict[str, Profile]]
STRATEGIES = ["territory", "weighted_round_robin", "least_loaded", "priority"]
matches_st = st.fixed_dictionaries(
    {},
    optional={
        "provinces": st.lists(st.sampled_from(CODES), min_size=1, max_size=2, unique=True),
        "product_lines": st.lists(st.sampled_from(PRODUCTS), min_size=1, unique=True),
        "grades": st.lists(st.sampled_from("ABCD"), min_size=1, max_size=2, unique=True),
        "score_min": st.integers(0, 100),
    },
)


@st.composite
def profiles_st(draw: st.DrawFn) -> Profile:
    doc: dict[str, Any] = {
        "territories": draw(st.lists(st.sampled_from(CODES), max_size=2, unique=True)),
        "product_lines": draw(st.lists(st.sampled_from(PRODUCTS), max_size=2, unique=True)),
        "weight": draw(st.integers(1, 4)),
        "active": draw(st.booleans() | st.just(True)),
    }
    optional = {
        "daily_capacity": st.integers(0, 4),
        "weekly_capacity": st.integers(0, 6),
        "active_hours": st.sampled_from(["10:00", "12:00"]).map(
            lambda end: {"wed": [{"start": "09:00", "end": end}]}
        ),
    }
    doc |= draw(st.fixed_dictionaries({}, optional=optional))
    return parse_profile(doc)


@st.composite
def rules_st(draw: st.DrawFn, ids: list[str]) -> DistributionRules:
    count = draw(st.integers(1, 4))
    rules = []
    for i in range(count):
        rule: dict[str, Any] = {
            "name": f"r{i}",
            "strategy": draw(st.sampled_from(STRATEGIES)),
            # Often a catch-all last rule, so that streams fill capacities.
            "match": {} if i == count - 1 and draw(st.booleans()) else draw(matches_st),
        }
        if draw(st.booleans()):
            # Any unit of the tree, siblings and strangers included: only children count.
            picked = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4, unique=True))
            rule["targets"] = [{"unit_id": t, "weight": draw(st.integers(1, 3))} for t in picked]
        if i + 1 < count and draw(st.booleans()):
            rule["fallback"] = f"r{draw(st.integers(i + 1, count - 1))}"
        rules.append(rule)
    return parse_rules({"rules": rules})


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    size = draw(st.integers(2, 14))
    ids = [uid(100 + i) for i in range(size)]
    parent: dict[str, str | None] = {ids[0]: None}
    for i in range(1, size):
        parent[ids[i]] = ids[draw(st.integers(0, i - 1))]
    profiles = {unit: draw(profiles_st()) for unit in ids[1:]}
    distributors: dict[str, Distributor] = {}
    for unit in ids:
        children = {c: profiles[c] for c in ids if parent[c] == unit}
        if children:
            distributors[unit] = Distributor(unit, draw(rules_st(ids)), children)
    return parent, distributors, profiles


leads_st = st.builds(
    LeadFacts,
    province=st.sampled_from(["", *CODES]),
    city=st.sampled_from(["", *CODES]),
    product_line=st.sampled_from(["", *PRODUCTS]),
    grade=st.sampled_from("ABCD"),
    score=st.integers(0, 100),
    excluded=st.frozensets(st.sampled_from([uid(100 + i) for i in range(14)]), max_size=2),
)


@PROPERTY
@given(tree=trees(), stream=st.lists(leads_st, max_size=60), hour=st.integers(8, 12))
def test_random_streams_respect_tree_capacity_hours_and_exclusions(
    tree: Tree,
    stream: list[LeadFacts],
    hour: int,
) -> None:
    parent, distributors, profiles = tree
    root = next(u for u, p in parent.items() if p is None)
    at = Moment(2, hour * 60)
    state = DistributionState()
    received: Counter[str] = Counter()
    for lead in stream:
        unit = root
        for decision in cascade(lead, state, start=root, distributors=distributors, at=at):
            target = decision.target_unit_id
            assert decision.unmatched == (target is None)
            if target is None:
                break
            assert parent[target] == unit  # a child of the deciding unit, never a sibling
            assert target not in lead.excluded
            profile = profiles[target]
            assert profile.active
            assert distributors[unit].closed_at(at).isdisjoint({target})
            received[target] += 1
            unit = target
    for unit, count in received.items():
        profile = profiles[unit]
        assert count <= (profile.daily_capacity if profile.daily_capacity is not None else count)
        assert count <= (profile.weekly_capacity if profile.weekly_capacity is not None else count)
        assert state.loads[unit].today == count


@PROPERTY
@given(tree=trees(), stream=st.lists(leads_st, max_size=40))
def test_decisions_are_deterministic(
    tree: Tree,
    stream: list[LeadFacts],
) -> None:
    parent, distributors, _ = tree
    root = next(u for u, p in parent.items() if p is None)

    def once() -> list[list[Decision]]:
        state = DistributionState()
        return [cascade(f, state, start=root, distributors=distributors, at=WED_10) for f in stream]

    assert once() == once()


@PROPERTY
@given(tree=trees(), lead=leads_st)
def test_the_first_matching_rule_decides(
    tree: Tree,
    lead: LeadFacts,
) -> None:
    """The compiled rule index agrees with reading the rules one by one."""
    _, distributors, _ = tree
    for d in distributors.values():
        decision = d.decide(lead, DistributionState(), at=WED_10)
        expected = next((r for r in d.rules.rules if _naive_match(r.match, lead)), None)
        if expected is None:
            assert decision.reason == "no rule matched"
        else:
            assert decision.reason.startswith(f"rule {expected.name}")


def _naive_match(m: Match, f: LeadFacts) -> bool:
    checks = [
        m.provinces is None or f.province in m.provinces,
        m.cities is None or f.city in m.cities,
        m.territories is None or f.territory in m.territories,
        m.product_lines is None or f.product_line in m.product_lines,
        m.sources is None or f.source in m.sources,
        m.grades is None or f.grade in m.grades,
        m.score_min is None or f.score >= m.score_min,
        m.score_max is None or f.score <= m.score_max,
    ]
    checks += [f.custom.get(k) in c.accepted() for k, c in m.custom.items()]
    return all(checks)


@PROPERTY
@given(weights=st.lists(st.integers(1, 12), min_size=1, max_size=8), cycles=st.integers(1, 5))
def test_weighted_round_robin_converges_to_the_weights(weights: list[int], cycles: int) -> None:
    ids = [uid(200 + i) for i in range(len(weights))]
    rule = {
        "name": "rr",
        "strategy": "weighted_round_robin",
        "targets": [{"unit_id": t, "weight": w} for t, w in zip(ids, weights, strict=True)],
    }
    d = distributor(R1, [rule], {t: {} for t in ids})
    cycle = sum(weights) // math.gcd(*weights)
    counts = Counter(run(d, [LeadFacts()] * (cycle * cycles)))
    assert [counts[t] for t in ids] == [w // math.gcd(*weights) * cycles for w in weights]
    assert len(smooth_schedule(weights)) == cycle


@PROPERTY
@given(
    units=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.sampled_from([[], ["ev"], ["suv"]])),
        min_size=1,
        max_size=6,
    ),
    stream=st.lists(st.sampled_from(["", "ev", "suv"]), max_size=40),
    strategy=st.sampled_from(STRATEGIES[1:]),
)
def test_a_lead_is_placed_whenever_some_target_has_room(
    units: list[tuple[int, int, list[str]]], stream: list[str], strategy: str
) -> None:
    """Skipping full targets never drops a lead another target could take, also when the
    caller's counters start some targets full."""
    ids = [uid(300 + i) for i in range(len(units))]
    profiles = {
        t: {"daily_capacity": cap, "product_lines": pl}
        for t, (cap, _, pl) in zip(ids, units, strict=True)
    }
    d = distributor(R1, [{"name": "all", "strategy": strategy}], profiles)
    state = DistributionState(
        {
            t: Load(today=min(used, cap), week=min(used, cap))
            for t, (cap, used, _) in zip(ids, units, strict=True)
        }
    )
    for product in stream:
        room = [
            t
            for t, (cap, _, pl) in zip(ids, units, strict=True)
            if state.loads[t].today < cap and (not product or not pl or product in pl)
        ]
        decision = d.decide(LeadFacts(product_line=product), state, at=WED_10)
        assert (decision.target_unit_id in room) if room else decision.unmatched
