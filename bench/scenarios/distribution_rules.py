"""distribution_rules: the pure distribution engine alone (no servers, no I/O).

A tenant of 1 HQ, 10 regions and 2,000 dealers (200 per region) with profiles (city
territories, product lines, tiers, daily/weekly capacities, weights, active hours) and rules
of realistic size (10 per unit: territory, weighted round-robin, least-loaded and priority
strategies, fallback chains, custom-field and score conditions). 1,000,000 leads are
cascaded HQ → region → dealer in batches, each lead taking one decision per level.

Issue 4's target (rule evaluation ≥ 200,000 decisions/s) is printed next to the figures,
never asserted. The run checks the invariants it can see: no capacity exceeded, every
target a child of the unit that decided."""

from __future__ import annotations

import gc
import os
import random
import resource
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.context import BenchContext, Scenario
from bench.report import Row, ScenarioResult, fmt_rate, fmt_ratio, progress
from crm_leads.distribution.engine import (
    Decision,
    DistributionState,
    Distributor,
    Moment,
    cascade,
)
from crm_leads.distribution.rules import LeadFacts, Profile, parse_profile, parse_rules

TARGET_DECISIONS_PER_SECOND = 200_000.0
LEADS = int(os.environ.get("BENCH_DISTRIBUTION_LEADS", "1000000"))
BATCH = 100_000
REGIONS = 10
DEALERS_PER_REGION = 200
PROVINCES = 31
CITIES_PER_PROVINCE = 10
PRODUCT_LINES = ("ev", "suv", "sedan", "truck")
SOURCES = ("web", "douyin", "baidu", "wechat", "key_account", "store_walk_in")
# Wednesday 10:30 local: most dealers are open, the ones without Wednesday hours are not.
AT = Moment(weekday=2, minute=10 * 60 + 30)


@dataclass
class Tree:
    hq: str
    regions: list[str]
    dealers: dict[str, list[str]]  # region -> its dealers
    profiles: dict[str, Profile]  # every unit below HQ
    distributors: dict[str, Distributor]


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _province(i: int) -> str:
    return f"{11 + i}0000"


def _city(i: int, j: int) -> str:
    return f"{11 + i}{j + 1:02d}00"


def _dealer_profile(rng: random.Random, city: str, province: str) -> Profile:
    lines = [p for p in PRODUCT_LINES if p != "truck" or rng.random() < 0.2]
    doc: dict[str, Any] = {
        "territories": [city, province] if rng.random() < 0.1 else [city],
        "product_lines": rng.sample(lines, k=rng.randint(2, len(lines))),
        "tier": rng.choices(("gold", "silver", "bronze"), (2, 4, 4))[0],
        "daily_capacity": rng.randint(300, 900),
        "weight": rng.randint(1, 5),
        "active": rng.random() > 0.02,
    }
    doc["weekly_capacity"] = doc["daily_capacity"] * 4
    if rng.random() < 0.9:
        day = [{"start": "08:00", "end": "12:00"}, {"start": "13:00", "end": "21:00"}]
        doc["active_hours"] = {d: day for d in ("mon", "tue", "wed", "thu", "fri", "sat")}
    return parse_profile(doc)


def _hq_rules(regions: list[str]) -> dict[str, Any]:
    def targets(indexes: range | list[int], **extra: Any) -> list[dict[str, Any]]:
        return [{"unit_id": regions[i], **extra} for i in indexes]

    fallback = {"fallback": "by-province"}
    return {
        "rules": [
            {
                "name": "key-accounts",
                "match": {"sources": ["key_account"], "grades": ["A", "B"]},
                "strategy": "priority",
                "targets": [
                    {"unit_id": regions[0], "priority": 1},
                    {"unit_id": regions[1], "priority": 2},
                ],
                **fallback,
            },
            {
                "name": "trucks",
                "match": {"product_lines": ["truck"], "score_min": 50},
                "strategy": "least_loaded",
                "targets": targets(range(2, 5)),
                **fallback,
            },
            {
                "name": "campaign-618",
                "match": {"custom": {"campaign": {"equals": "618"}}},
                "strategy": "weighted_round_robin",
                "targets": targets(range(REGIONS), weight=3),
                **fallback,
            },
            {
                "name": "cold-leads",
                "match": {"grades": ["D"], "score_max": 15},
                "strategy": "weighted_round_robin",
                "targets": targets(range(5, REGIONS)),
                **fallback,
            },
            {
                "name": "capital",
                "match": {"cities": [_city(0, 0), _city(1, 0)], "grades": ["A"]},
                "strategy": "priority",
                "targets": targets([0, 1]),
                **fallback,
            },
            {
                "name": "social",
                "match": {"sources": ["douyin", "wechat"], "score_min": 70},
                "strategy": "territory",
                **fallback,
            },
            {
                "name": "fleet",
                "match": {"custom": {"segment": {"any_of": ["fleet", "rental"]}}},
                "strategy": "least_loaded",
                **fallback,
            },
            {
                "name": "sedan-east",
                "match": {
                    "product_lines": ["sedan"],
                    "provinces": [_province(i) for i in (0, 10, 20)],
                },
                "strategy": "territory",
                **fallback,
            },
            {
                "name": "by-province",
                "strategy": "territory",
                "fallback": "spread",
            },
            {
                "name": "spread",
                "match": {"sources": ["never-matched-directly"]},
                "strategy": "weighted_round_robin",
            },
        ]
    }


def _region_rules(dealers: list[str], profiles: dict[str, Profile]) -> dict[str, Any]:
    gold = [d for d in dealers if profiles[d].tier == "gold"][:20]
    fallback = {"fallback": "by-city"}
    return {
        "rules": [
            {
                "name": "ev-premium",
                "match": {"product_lines": ["ev"], "grades": ["A", "B"]},
                "strategy": "territory",
                "tiers": ["gold", "silver"],
                **fallback,
            },
            {
                "name": "hot-leads",
                "match": {"score_min": 90},
                "strategy": "least_loaded",
                "targets": [{"unit_id": d} for d in gold],
                **fallback,
            },
            {
                "name": "fleet",
                "match": {"custom": {"segment": {"equals": "fleet"}}},
                "strategy": "priority",
                "targets": [{"unit_id": d, "priority": i} for i, d in enumerate(dealers[:5])],
                **fallback,
            },
            {
                "name": "trucks",
                "match": {"product_lines": ["truck"]},
                "strategy": "territory",
                "fallback": "region-wrr",
            },
            {
                "name": "walk-in",
                "match": {"sources": ["store_walk_in"]},
                "strategy": "territory",
                "fallback": "region-wrr",
            },
            {
                "name": "key-accounts",
                "match": {"sources": ["key_account"]},
                "strategy": "weighted_round_robin",
                "tiers": ["gold"],
                **fallback,
            },
            {
                "name": "campaign-618",
                "match": {"custom": {"campaign": {"equals": "618"}}, "score_min": 40},
                "strategy": "weighted_round_robin",
                "targets": [{"unit_id": d, "weight": 2} for d in dealers[::4]],
                **fallback,
            },
            {
                "name": "bronze-cold",
                "match": {"grades": ["D"], "score_max": 10},
                "strategy": "territory",
                "tiers": ["bronze"],
                **fallback,
            },
            {"name": "by-city", "strategy": "territory", "fallback": "region-wrr"},
            {
                "name": "region-wrr",
                "match": {"sources": ["never-matched-directly"]},
                "strategy": "weighted_round_robin",
            },
        ]
    }


def build_tree(seed: int = 4) -> Tree:
    rng = random.Random(seed)
    hq = _id(rng)
    regions = [_id(rng) for _ in range(REGIONS)]
    profiles: dict[str, Profile] = {}
    dealers: dict[str, list[str]] = {}
    for r, region in enumerate(regions):
        provinces = [i for i in range(PROVINCES) if i % REGIONS == r]
        cities = [(i, j) for i in provinces for j in range(CITIES_PER_PROVINCE)]
        dealers[region] = []
        for n in range(DEALERS_PER_REGION):
            i, j = cities[n % len(cities)]
            dealer = _id(rng)
            dealers[region].append(dealer)
            profiles[dealer] = _dealer_profile(rng, _city(i, j), _province(i))
        profiles[region] = parse_profile(
            {"territories": [_province(i) for i in provinces], "weight": DEALERS_PER_REGION}
        )
    distributors = {
        hq: Distributor(hq, parse_rules(_hq_rules(regions)), {r: profiles[r] for r in regions})
    }
    for region in regions:
        own = {d: profiles[d] for d in dealers[region]}
        rules = parse_rules(_region_rules(dealers[region], profiles))
        distributors[region] = Distributor(region, rules, own)
    return Tree(hq, regions, dealers, profiles, distributors)


def make_leads(rng: random.Random, count: int, dealer_ids: list[str]) -> list[LeadFacts]:
    customs: list[dict[str, str]] = (
        [{}] * 90 + [{"campaign": "618"}] * 6 + [{"segment": "fleet"}] * 3
    )
    customs.append({"segment": "rental"})
    lines = ("ev", "ev", "ev", "suv", "suv", "suv", "sedan", "sedan", "sedan", "truck")
    leads = []
    for _ in range(count):
        i = rng.randrange(PROVINCES)
        excluded = frozenset((rng.choice(dealer_ids),)) if rng.random() < 0.01 else frozenset()
        leads.append(
            LeadFacts(
                province=_province(i),
                city=_city(i, rng.randrange(CITIES_PER_PROVINCE)),
                product_line=rng.choice(lines),
                source=rng.choice(SOURCES),
                grade=rng.choice("ABCD"),
                score=rng.randrange(101),
                custom=rng.choice(customs),
                excluded=excluded,
            )
        )
    return leads


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(ctx: BenchContext) -> ScenarioResult:  # ctx.servers unused: pure computation
    # As the services run (crm_platform's runtime): what lives for the whole run is frozen
    # out of the collector and young collections are rarer; restored for later scenarios.
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        return _measure()
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _measure() -> ScenarioResult:
    progress("distribution_rules: building the tree, profiles and rules")
    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    tree = build_tree()
    compile_seconds = time.perf_counter() - started
    gc.collect()
    gc.freeze()
    state = DistributionState()
    rng = random.Random(42)
    all_dealers = [d for ds in tree.dealers.values() for d in ds]
    parents = {d: r for r, ds in tree.dealers.items() for d in ds} | {
        r: tree.hq for r in tree.regions
    }
    decide_seconds = 0.0
    decisions = 0
    ends: Counter[str] = Counter()
    problems: list[str] = []
    done = 0
    while done < LEADS:
        batch = make_leads(rng, min(BATCH, LEADS - done), all_dealers)
        t0 = time.perf_counter()
        paths = [
            cascade(f, state, start=tree.hq, distributors=tree.distributors, at=AT) for f in batch
        ]
        decide_seconds += time.perf_counter() - t0
        done += len(batch)
        decisions += sum(len(p) for p in paths)
        _tally(paths, ends, parents, tree.hq, problems)
        progress(f"distribution_rules: {done:,} leads")
    for unit, load in state.loads.items():
        profile = tree.profiles[unit]
        if profile.daily_capacity is not None and load.today > profile.daily_capacity:
            problems.append(f"unit {unit} got {load.today} > daily capacity")
    leads_per_second = LEADS / decide_seconds
    decisions_per_second = decisions / decide_seconds
    peak = _peak_rss_mb()
    result = ScenarioResult(
        name="distribution_rules",
        title="pure distribution engine: cascade HQ → region → dealer (no I/O)",
    )
    load1, _, _ = os.getloadavg()
    result.notes = [
        f"tree: 1 HQ, {REGIONS} regions, {len(all_dealers):,} dealers; 10 rules per unit; "
        f"compiled in {compile_seconds:.2f} s",
        f"{LEADS:,} leads in batches of {BATCH:,} (lead generation not timed; the tree frozen "
        "out of the garbage collector, as the services do); "
        f"{decisions:,} decisions (one per level a lead passes)",
        f"outcome: {ends['dealer']:,} at a dealer, {ends['region']:,} unmatched in a region "
        f"pool, {ends['hq']:,} unmatched at HQ",
        f"machine: {os.cpu_count()} CPUs, load average now {load1:.2f} "
        "(other work on the machine skews every figure)",
    ]
    result.rows = [
        Row(
            "decisions (one unit choosing a child)",
            fmt_rate(decisions_per_second, "decisions/s"),
            fmt_rate(TARGET_DECISIONS_PER_SECOND, "decisions/s target"),
            fmt_ratio(decisions_per_second / TARGET_DECISIONS_PER_SECOND),
        ),
        Row(
            "leads cascaded HQ → region → dealer",
            fmt_rate(leads_per_second, "leads/s"),
            fmt_rate(TARGET_DECISIONS_PER_SECOND, "decisions/s target"),
            fmt_ratio(leads_per_second / TARGET_DECISIONS_PER_SECOND),
        ),
        Row("time deciding", f"{decide_seconds:.2f} s"),
        Row(
            "peak RSS of the bench process",
            f"{peak:,.0f} MB",
            f"{rss_before:,.0f} MB before building the tree",
        ),
    ]
    result.problems = problems[:20]
    result.data = {
        "leads": LEADS,
        "decisions": decisions,
        "decide_seconds": decide_seconds,
        "decisions_per_second": decisions_per_second,
        "leads_per_second": leads_per_second,
        "target_decisions_per_second": TARGET_DECISIONS_PER_SECOND,
        "compile_seconds": compile_seconds,
        "peak_rss_mb": peak,
        "outcomes": dict(ends),
    }
    return result


def _tally(
    paths: list[list[Decision]],
    ends: Counter[str],
    parents: dict[str, str],
    hq: str,
    problems: list[str],
) -> None:
    for path in paths:
        decider = hq
        for decision in path:
            target = decision.target_unit_id
            if target is not None and parents.get(target) != decider:
                problems.append(f"{target} is not a child of the deciding unit {decider}")
            decider = target or decider
        last = path[-1]
        ends["dealer" if last.target_unit_id else ("hq" if len(path) == 1 else "region")] += 1


SCENARIO = Scenario(
    name="distribution_rules",
    title="pure distribution engine: cascade HQ → region → dealer (no I/O)",
    run=run,
)
