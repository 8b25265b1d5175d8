"""Pure rules of the dealer performance report: rates, totals, delta folding and first
contact bookkeeping."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from crm_analytics.dealerperf import rules
from crm_analytics.dealerperf.mapping import report_to_json
from crm_analytics.dealerperf.models import COUNTERS
from crm_analytics.dealerperf.rules import Unit

T = uuid.uuid4()
D1 = Unit(tenant_id=T, org_id=uuid.uuid4(), org_path="/acme/east/d1/")
D2 = Unit(tenant_id=T, org_id=uuid.uuid4(), org_path="/acme/east/d2/")
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)


def counts(**kw: float) -> dict[str, float]:
    return {**{name: 0 for name in (*COUNTERS, "first_contact_seconds")}, **kw}


def test_rates_over_decided_offers_received_leads_and_first_contacts() -> None:
    r = rules.rates(
        counts(
            received=10,
            accepted=6,
            rejected=1,
            expired=1,
            reclaimed=2,
            first_contacts=4,
            first_contact_seconds=600,
        )
    )
    assert r == {"acceptance_rate": 0.75, "reclaim_rate": 0.2, "avg_first_contact_seconds": 150}


def test_rates_are_none_when_nothing_to_divide_by() -> None:
    assert rules.rates(counts()) == {
        "acceptance_rate": None,
        "reclaim_rate": None,
        "avg_first_contact_seconds": None,
    }
    # Expiries alone: decided offers, none accepted.
    assert rules.rates(counts(expired=3))["acceptance_rate"] == 0


def test_totals_rates_come_from_sums_not_from_daily_rates() -> None:
    def row(day: int, **kw: float) -> SimpleNamespace:
        return SimpleNamespace(
            owner_org_id=D1.org_id,
            owner_org_path=D1.org_path,
            day=date(2026, 11, day),
            **counts(**kw),
        )

    rows = [
        row(1, received=1, accepted=1, first_contacts=1, first_contact_seconds=100),
        row(
            2,
            received=3,
            accepted=1,
            rejected=2,
            reclaimed=1,
            first_contacts=3,
            first_contact_seconds=200,
        ),
    ]
    body = report_to_json(rows)
    assert [x["day"] for x in body["rows"]] == ["2026-11-01", "2026-11-02"]
    assert body["rows"][1]["acceptance_rate"] == pytest.approx(1 / 3)
    totals = body["totals"]
    assert (totals["received"], totals["accepted"], totals["rejected"]) == (4, 2, 2)
    assert totals["acceptance_rate"] == 0.5  # not the mean of 1.0 and 0.33
    assert totals["reclaim_rate"] == 0.25
    assert totals["avg_first_contact_seconds"] == 75
    assert report_to_json([])["totals"]["acceptance_rate"] is None


def test_merge_gives_one_delta_per_unit_and_day() -> None:
    later = NOON + timedelta(days=1)
    merged = rules.merge(
        [
            rules.delta(D1, NOON, "received"),
            rules.delta(D1, NOON, "received"),
            rules.delta(D2, NOON, "received"),
            rules.delta(D1, later, "accepted"),
            rules.delta(D1, NOON, "accepted"),
        ]
    )
    got = {(d.unit.org_path, d.day): d.counts for d in merged}
    assert got == {
        (D1.org_path, NOON.date()): {"received": 2, "accepted": 1},
        (D2.org_path, NOON.date()): {"received": 1},
        (D1.org_path, later.date()): {"accepted": 1},
    }


def test_delta_rejects_unknown_counters() -> None:
    with pytest.raises(AssertionError):
        rules.delta(D1, NOON, "nope")


def test_first_contact_counts_from_receipt() -> None:
    received = NOON - timedelta(hours=2)
    assert rules.is_new_first_contact(received=received, previous=None, contact=NOON)
    (d,) = rules.first_contact_deltas(D1, received, None, NOON)
    assert (d.day, d.counts, d.first_contact_seconds) == (NOON.date(), {"first_contacts": 1}, 7200)


def test_back_dated_or_later_activities_are_not_a_new_first_contact() -> None:
    received = NOON
    before = NOON - timedelta(minutes=1)
    assert not rules.is_new_first_contact(received=received, previous=None, contact=before)
    first = NOON + timedelta(minutes=5)
    later = NOON + timedelta(minutes=9)
    assert not rules.is_new_first_contact(received=received, previous=first, contact=later)
    assert not rules.is_new_first_contact(received=received, previous=first, contact=first)


def test_an_earlier_activity_consumed_late_replaces_the_first_contact() -> None:
    received = NOON - timedelta(days=1)
    previous = NOON  # recorded first, on the next day
    contact = received + timedelta(minutes=30)  # logged earlier, consumed later
    assert rules.is_new_first_contact(received=received, previous=previous, contact=contact)
    deltas = rules.first_contact_deltas(D1, received, previous, contact)
    got = {d.day: (d.counts["first_contacts"], d.first_contact_seconds) for d in deltas}
    assert got == {previous.date(): (-1, -86400), contact.date(): (1, 1800)}
    # Same day: the count stays, only the seconds shrink.
    (same,) = rules.first_contact_deltas(
        D1, NOON, NOON + timedelta(hours=2), NOON + timedelta(hours=1)
    )
    assert (same.counts["first_contacts"], same.first_contact_seconds) == (0, -3600)


def test_sla_warnings_are_counted_apart_from_breaches_and_summed_in_totals() -> None:
    (d,) = rules.merge(
        [
            rules.delta(D1, NOON, "sla_warnings"),
            rules.delta(D1, NOON, "sla_warnings"),
            rules.delta(D1, NOON, "sla_breaches"),
        ]
    )
    assert d.counts == {"sla_warnings": 2, "sla_breaches": 1}

    def row(day: int, **kw: float) -> SimpleNamespace:
        return SimpleNamespace(
            owner_org_id=D1.org_id,
            owner_org_path=D1.org_path,
            day=date(2026, 11, day),
            **counts(**kw),
        )

    body = report_to_json([row(1, sla_warnings=2, sla_breaches=1), row(2, sla_warnings=3)])
    assert [x["sla_warnings"] for x in body["rows"]] == [2, 3]
    assert (body["totals"]["sla_warnings"], body["totals"]["sla_breaches"]) == (5, 1)


def test_no_rate_is_derived_from_sla_warnings() -> None:
    # A breach need not follow a warning (reminders off, or longer than the target), so
    # breaches / warnings is not the share of warnings that ended in a breach.
    assert rules.rates(counts(sla_warnings=4, sla_breaches=6)) == rules.rates(counts())
