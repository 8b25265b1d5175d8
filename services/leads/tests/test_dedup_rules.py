"""De-duplication rules, pure part: document validation, company-name similarity, window and
scope, picking the duplicate, and the field changes a duplicate brings. No I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_leads.dedup.rules import (
    DEFAULT_RULES,
    DedupRule,
    Existing,
    Probe,
    changes,
    identity_duplicate,
    normalise_company,
    parse_rules,
    profile_duplicate,
    rules_json,
    similarity,
)
from crm_platform.errors import InvalidArgument
from crm_platform.ids import new_id

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
FUZZY = {
    "name": "company",
    "keys": ["company", "city"],
    "match": "fuzzy",
    "fuzzy": {"field": "company", "threshold": 85, "same": ["city"]},
}


def probe(**kw: str) -> Probe:
    base = {
        "full_name": "Zhang",
        "company": "",
        "province": "",
        "city": "",
        "source": "web",
        "campaign": "",
    }
    return Probe(**(base | kw))


def lead(age_days: int = 0, **kw: Any) -> Existing:
    base: dict[str, Any] = {
        "id": new_id(),
        "full_name": "Zhang",
        "company": "",
        "province": "",
        "city": "",
        "source": "web",
        "update_time": NOW - timedelta(days=age_days),
        "same_campaign": False,
    }
    return Existing(**(base | kw))


def rule(**kw: Any) -> DedupRule:
    return DedupRule.model_validate({"name": "r", "keys": ["phone"]} | kw)


def test_default_is_todays_behaviour() -> None:
    assert rules_json(DEFAULT_RULES) == {
        "schema_version": 1,
        "rules": [
            {
                "name": "system-keys",
                "keys": ["phone", "email", "open_id"],
                "match": "exact",
                "scope": "any",
                "action": "merge",
            }
        ],
    }
    assert parse_rules(rules_json(DEFAULT_RULES)) == DEFAULT_RULES


PHONE = {"name": "r", "keys": ["phone"]}


def fuzzy_spec(**spec: Any) -> dict[str, Any]:
    return FUZZY | {"fuzzy": FUZZY["fuzzy"] | spec}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (PHONE | {"keys": []}, "rules.0.keys"),
        (PHONE | {"keys": ["phone", "phone"]}, "rules.0.keys"),
        (PHONE | {"keys": ["fax"]}, "rules.0.keys.0"),
        (PHONE | {"keys": ["phone", "city"]}, "rules.0.keys"),
        (PHONE | {"keys": ["company"]}, "rules.0.keys"),
        (PHONE | {"colour": "red"}, "rules.0.colour"),
        (PHONE | {"keys": ["company", "city"], "match": "fuzzy"}, "rules.0.fuzzy"),
        (PHONE | {"match": "fuzzy", "fuzzy": FUZZY["fuzzy"]}, "rules.0.match"),
        (PHONE | {"keys": ["company", "city"], "fuzzy": FUZZY["fuzzy"]}, "rules.0.fuzzy"),
        (fuzzy_spec(threshold=101), "rules.0.fuzzy.threshold"),
        (fuzzy_spec(threshold=-1), "rules.0.fuzzy.threshold"),
        (fuzzy_spec(same=["province"]), "rules.0.fuzzy.same"),
        (fuzzy_spec(field="address"), "rules.0.fuzzy.field"),
        (FUZZY | {"keys": ["company", "city", "province"]}, "rules.0.fuzzy"),
        (PHONE | {"window_days": 0}, "rules.0.window_days"),
        (PHONE | {"scope": "region"}, "rules.0.scope"),
        (PHONE | {"action": "ignore"}, "rules.0.action"),
        (PHONE | {"overwrite_fields": ["city"]}, "rules.0.overwrite_fields"),
        (
            PHONE | {"action": "overwrite", "overwrite_fields": ["score"]},
            "rules.0.overwrite_fields.0",
        ),
        (PHONE | {"name": ""}, "rules.0.name"),
    ],
)
def test_bad_rule_names_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_rules({"rules": [bad]})
    assert exc.value.reason == "DEDUP_RULES_INVALID"
    assert field in [v.field for v in exc.value.violations]


def test_duplicate_names_and_unknown_top_level_fields_are_rejected() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_rules({"rules": [{"name": "a", "keys": ["phone"]}, {"name": "a", "keys": ["email"]}]})
    assert [(v.field, v.description) for v in exc.value.violations] == [
        ("rules", "rule name 'a' is used twice")
    ]
    with pytest.raises(InvalidArgument) as exc:
        parse_rules({"schema_version": 2, "rules": [], "extra": 1})
    assert {v.field for v in exc.value.violations} == {"schema_version", "extra"}


@pytest.mark.parametrize(
    ("ours", "theirs", "city"),
    [
        ("杭州阿里巴巴网络技术有限公司", "阿里巴巴（杭州）网络技术有限公司", "杭州"),
        ("杭州阿里巴巴网络技术有限公司", "阿里巴巴(杭州)网络技术有限公司", "杭州市"),
        ("Acme Trading Co., Ltd", "ACME Trading Company Limited", "Shanghai"),
        ("Acme Trading (Shanghai) Co., Ltd.", "acme trading", "Shanghai"),
    ],
)
def test_company_variants_match(ours: str, theirs: str, city: str) -> None:
    fuzzy = rule(**FUZZY)
    found = similarity(fuzzy, probe(company=ours, city=city), lead(company=theirs, city=city))
    assert found is not None and found >= 95


def test_different_companies_or_cities_do_not_match() -> None:
    fuzzy = rule(**FUZZY)
    alibaba = probe(company="阿里巴巴网络技术有限公司", city="杭州")
    assert similarity(fuzzy, alibaba, lead(company="阿里巴巴网络技术有限公司", city="北京")) is None
    assert similarity(fuzzy, alibaba, lead(company="腾讯科技有限公司", city="杭州")) is None
    acme = probe(company="Acme Trading", city="Shanghai")
    assert similarity(fuzzy, acme, lead(company="Acme Logistics", city="Shanghai")) is None


def test_place_names_are_removed_as_whole_words_only() -> None:
    assert normalise_company("Acme Trading", ["Ac"]) == "acme trading"
    assert normalise_company("Hangzhou Acme Trading Co.", ["Hangzhou"]) == "acme trading"


def test_exact_profile_rule_wants_every_key_equal() -> None:
    exact = rule(name="name-company", keys=["full_name", "company", "city"])
    p = probe(full_name="Li Lei", company="Acme Ltd", city="Wuxi")
    assert similarity(exact, p, lead(full_name="li  lei", company="ACME", city="Wuxi")) == 100
    assert (
        similarity(exact, p, lead(full_name="Li Lei", company="Acme Trading", city="Wuxi")) is None
    )


def test_profile_duplicate_is_the_best_then_the_oldest() -> None:
    fuzzy = rule(**FUZZY)
    p = probe(company="Acme Trading Co", city="Wuxi")
    older = lead(company="Acme Trading", city="Wuxi")
    newer = lead(company="Acme Trading Ltd", city="Wuxi")
    weaker = lead(company="Acme Tradin", city="Wuxi")
    found = profile_duplicate(fuzzy, p, [newer, weaker, older], NOW)
    assert found is not None
    assert (found.lead_id, found.field, found.matched) == (older.id, "company", "company ~100")
    assert profile_duplicate(fuzzy, p, [lead(company="Other", city="Wuxi")], NOW) is None


def test_window_and_scope() -> None:
    p = probe(source="web", campaign="expo")
    windowed = rule(window_days=30)
    assert identity_duplicate([windowed], {"phone": lead(age_days=29)}, p, NOW) is not None
    assert identity_duplicate([windowed], {"phone": lead(age_days=31)}, p, NOW) is None
    channel = rule(scope="channel")
    assert identity_duplicate([channel], {"phone": lead(source="web")}, p, NOW) is not None
    assert identity_duplicate([channel], {"phone": lead(source="wechat")}, p, NOW) is None
    campaign = rule(scope="campaign")
    assert identity_duplicate([campaign], {"phone": lead(same_campaign=True)}, p, NOW)
    assert identity_duplicate([campaign], {"phone": lead(same_campaign=False)}, p, NOW) is None
    no_campaign = probe()
    assert (
        identity_duplicate([campaign], {"phone": lead(same_campaign=True)}, no_campaign, NOW)
        is None
    )


def test_first_rule_that_finds_a_duplicate_decides() -> None:
    p = probe()
    recent_reject = rule(name="recent", keys=["phone"], window_days=7, action="reject")
    merge_any = rule(name="any", keys=["phone", "email"])
    old, other = lead(age_days=10), lead(age_days=1)
    found = identity_duplicate([recent_reject, merge_any], {"phone": old}, p, NOW)
    assert found is not None and (found.rule.name, found.lead_id) == ("any", old.id)
    found = identity_duplicate([recent_reject, merge_any], {"phone": other}, p, NOW)
    assert found is not None and found.rule.action == "reject"
    # A rule not covering the held key kind is skipped.
    assert identity_duplicate([rule(keys=["email"])], {"phone": old}, p, NOW) is None
    # Several held keys: the oldest lead.
    first, second = lead(), lead()
    found = identity_duplicate([merge_any], {"email": second, "phone": first}, p, NOW)
    assert found is not None and (found.lead_id, found.field) == (first.id, "phone")


def test_merge_fills_blanks_and_overwrite_replaces_per_policy() -> None:
    fields = ("full_name", "phone", "email", "company", "province", "city", "open_id", "union_id")
    current = dict.fromkeys(fields, "") | {"full_name": "Old", "company": "Old Co", "city": "A"}
    supplied = dict.fromkeys(fields, "") | {"full_name": "New", "company": "", "email": "e@x.cn"}
    assert changes("merge", None, current, supplied) == {"email": ("", "e@x.cn")}
    assert changes("overwrite", None, current, supplied) == {
        "full_name": ("Old", "New"),
        "email": ("", "e@x.cn"),
    }
    assert changes("overwrite", ["full_name"], current, supplied) == {"full_name": ("Old", "New")}


def test_ids_are_uuid7_so_min_is_oldest() -> None:
    a, b = new_id(), new_id()
    assert isinstance(a, uuid.UUID) and a < b
