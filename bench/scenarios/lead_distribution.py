"""lead_distribution: issue 4's end-to-end benchmark — distribute a pool of leads from HQ
down to the dealers (HQ → region → dealer in one cascading run) and assign them to the
dealers' reps, through the leads service's REST API, with every decision persisted (owners,
history, acceptance offers, counters) and the events in the outbox.

Setup (not timed): directory + leads migrated and started as processes; the tenant and its
administrator through the directory's REST API. The tree (1 HQ, 10 regions, 2,000 dealers,
20,000 reps) is too big to build through the directory in a benchmark, so the leads service's
replicas of it (``org_units`` with the directory's materialised paths, ``users``) are COPYed
into its database; the tenant's root arrives through the real directory events. Profiles,
rules, assignment policies and the private-pool cap go through the real REST endpoints.
``BENCH_DISTRIBUTION_LEADS`` (default 1,000,000) pooled leads owned by HQ, with their first
enquiry (product line), are COPYed in.

Measured: ``POST /v1/distribution-rules/{hq}:run``, then ``POST
/v1/assignment-policies/{hq}:runSubtree`` (every dealer's pool, set-based across dealers; or
one per region at once with ``BENCH_ASSIGN_MODE=regions``);
the engine alone in this process on the same documents and leads; the physical floor of
moving ownership (asyncpg ``UPDATE … FROM unnest`` of the same number of rows in 5,000-row
transactions); the leads process's peak RSS and CPU. Issue 4's targets (≥ 20,000 leads/s end
to end, ≥ 200,000 decisions/s for the rules alone) are printed, never asserted.

Checks (problems, not asserts): one known owner per lead, no dealer past its daily capacity
(counters and lead counts), owner history rows = hops, outbox rows for the moves, each
assigned lead in exactly one ``lead_batch.assigned`` event, no rep past the private-pool cap
or outside its unit."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.context import BenchContext, Scenario
from bench.procstats import MB, CpuWindow, ProcessMonitor, rss_bytes
from bench.report import Row, ScenarioResult, fmt_rate, fmt_ratio, progress
from bench.stack import Stack, asyncpg_dsn
from crm.leads.v1 import events_pb2
from crm_leads.distribution.engine import DistributionState, Distributor, cascade, moment_at
from crm_leads.distribution.rules import LeadFacts, Profile, parse_profile, parse_rules
from crm_leads.distribution.service import TIMEZONE
from crm_platform.events import parse_event
from crm_platform.ids import new_id

TARGET_LEADS_PER_SECOND = 20_000.0
TARGET_DECISIONS_PER_SECOND = 200_000.0
REGIONS = 10
DEALERS_PER_REGION = 200
REPS_PER_DEALER = 10
PROVINCES = 31
CITIES_PER_PROVINCE = 10
# Regions whose dealers' daily capacities add up to 90 % of the leads their provinces send
# them (the capacities bind: the rest stays flagged in the region's pool); the others 150 %.
BINDING_REGIONS = frozenset({0, 3, 6})
BINDING_FACTOR, LOOSE_FACTOR = 0.9, 1.5
CONCURRENT_PUTS = 16
# Assignment: one subtree run from HQ ("hq"), or one per region at once ("regions").
ASSIGN_MODE = os.environ.get("BENCH_ASSIGN_MODE", "hq")
FLOOR_BATCH = 5000
COPY_CHUNK = 100_000
PRODUCT_LINES = ("ev", "ev", "ev", "suv", "suv", "suv", "sedan", "sedan", "sedan", "truck")
SOURCES = ("web", "douyin", "baidu", "wechat", "key_account", "store_walk_in")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
KIND_REGION, KIND_DEALER = 2, 3  # crm.directory.v1.OrgUnitKind


def _province(i: int) -> str:
    return f"{11 + i}0000"


def _city(i: int, j: int) -> str:
    return f"{11 + i}{j + 1:02d}00"


def _grade(score: int) -> str:
    return "A" if score >= 85 else "B" if score >= 70 else "C" if score >= 50 else "D"


@dataclass(frozen=True)
class Unit:
    id: uuid.UUID
    code: str
    path: str


@dataclass
class Tree:
    tenant_id: uuid.UUID
    hq: Unit
    regions: list[Unit]
    dealers: dict[uuid.UUID, list[Unit]]  # region id -> its dealers
    reps: dict[uuid.UUID, list[uuid.UUID]]  # dealer id -> its reps
    profiles: dict[uuid.UUID, dict[str, Any]]  # every region and dealer
    rules: dict[uuid.UUID, dict[str, Any]]  # HQ and every region
    policies: dict[uuid.UUID, dict[str, Any]]  # every dealer
    capacity: dict[uuid.UUID, int] = field(default_factory=dict)  # dealer -> daily capacity

    @property
    def all_dealers(self) -> list[Unit]:
        return [d for ds in self.dealers.values() for d in ds]


@dataclass(frozen=True)
class Admin:
    slug: str
    tenant_id: uuid.UUID
    root_id: uuid.UUID
    root_path: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _tenant(directory_url: str, bootstrap_token: str) -> Admin:
    """The tenant and its administrator (at HQ) through the directory's public API."""
    slug = "bdist" + uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=directory_url, timeout=10) as c:
        r = await c.post(
            "/v1/tenants",
            json={
                "slug": slug,
                "display_name": "Bench Motors",
                "admin_username": "admin",
                "admin_password": "bench-admin-pw",
            },
            headers={"Authorization": f"Bootstrap {bootstrap_token}"},
        )
        r.raise_for_status()
        created = r.json()
    return Admin(
        slug,
        uuid.UUID(created["tenant"]["id"]),
        uuid.UUID(created["root"]["id"]),
        str(created["root"]["path"]),
        await _login(directory_url, slug),
    )


async def _login(directory_url: str, slug: str) -> str:
    async with httpx.AsyncClient(base_url=directory_url, timeout=10) as c:
        r = await c.post(
            "/v1/auth/token",
            json={"tenant": slug, "username": "admin", "password": "bench-admin-pw"},
        )
        r.raise_for_status()
        return str(r.json()["access_token"])


def _region_provinces(r: int) -> list[int]:
    return [i for i in range(PROVINCES) if i % REGIONS == r]


def build_tree(admin: Admin, leads: int, seed: int = 4) -> Tree:
    """Units, reps and documents; dealer capacities scaled to ``leads``."""
    rng = random.Random(seed)
    hq = Unit(admin.root_id, "hq", admin.root_path)
    tree = Tree(admin.tenant_id, hq, [], {}, {}, {}, {}, {})
    for r in range(REGIONS):
        region = Unit(new_id(), f"r{r:02d}", f"{hq.path}r{r:02d}/")
        tree.regions.append(region)
        provinces = _region_provinces(r)
        tree.profiles[region.id] = {
            "territories": [_province(i) for i in provinces],
            "weight": len(provinces),
        }
        cities = [(i, j) for i in provinces for j in range(CITIES_PER_PROVINCE)]
        expected = leads * len(provinces) / PROVINCES
        budget = int(expected * (BINDING_FACTOR if r in BINDING_REGIONS else LOOSE_FACTOR))
        shares = [rng.uniform(0.5, 1.5) for _ in range(DEALERS_PER_REGION)]
        dealers: list[Unit] = []
        for n in range(DEALERS_PER_REGION):
            code = f"d{r:02d}{n:03d}"
            dealer = Unit(new_id(), code, f"{region.path}{code}/")
            dealers.append(dealer)
            i, j = cities[n % len(cities)]
            capacity = int(budget * shares[n] / sum(shares))
            tree.capacity[dealer.id] = capacity
            profile: dict[str, Any] = {
                "territories": [_city(i, j), _province(i)]
                if rng.random() < 0.05
                else [_city(i, j)],
                "tier": rng.choices(("gold", "silver", "bronze"), (2, 4, 4))[0],
                "daily_capacity": capacity,
                "weekly_capacity": capacity * 6,
                "weight": rng.randint(1, 5),
            }
            if rng.random() < 0.2:
                profile["product_lines"] = ["ev", "suv", "sedan"]  # no trucks
            tree.profiles[dealer.id] = profile
            reps = [new_id() for _ in range(REPS_PER_DEALER)]
            tree.reps[dealer.id] = reps
            strategy = "round_robin" if n % 2 == 0 else "load_based"
            tree.policies[dealer.id] = {
                "strategy": strategy,
                "reps": [{"user_id": str(u), "weight": rng.randint(1, 3)} for u in reps],
            }
        tree.dealers[region.id] = dealers
        tree.rules[region.id] = _region_rules(dealers, tree.profiles)
    tree.rules[hq.id] = _hq_rules(tree.regions)
    return tree


def _hq_rules(regions: list[Unit]) -> dict[str, Any]:
    """Regions by province, key accounts and trucks by priority lists, a spread fallback."""
    ids = [str(r.id) for r in regions]
    by_province = {"fallback": "by-province"}
    return {
        "rules": [
            {
                "name": "key-accounts-north",
                "match": {
                    "sources": ["key_account"],
                    "grades": ["A"],
                    "provinces": [_province(i) for i in (0, 10, 20, 30)],
                },
                "strategy": "priority",
                "targets": [{"unit_id": ids[0], "priority": 1}],
                **by_province,
            },
            {
                "name": "social-hot",
                "match": {"sources": ["douyin", "wechat"], "score_min": 80},
                "strategy": "territory",
                **by_province,
            },
            {"name": "by-province", "strategy": "territory", "fallback": "spread"},
            {
                "name": "spread",
                "match": {"sources": ["never-matched-directly"]},
                "strategy": "weighted_round_robin",
            },
        ]
    }


def _region_rules(dealers: list[Unit], profiles: dict[uuid.UUID, dict[str, Any]]) -> dict[str, Any]:
    """Territory by city first (premium and walk-in variants), hot leads to the least loaded
    gold dealers, a weighted round robin over every dealer as the capacity fallback."""
    gold = [d for d in dealers if profiles[d.id]["tier"] == "gold"][:20]
    by_city = {"fallback": "by-city"}
    return {
        "rules": [
            {
                "name": "hot-leads",
                "match": {"score_min": 95},
                "strategy": "least_loaded",
                "targets": [{"unit_id": str(d.id)} for d in gold],
                **by_city,
            },
            {
                "name": "ev-premium",
                "match": {"product_lines": ["ev"], "grades": ["A", "B"]},
                "strategy": "territory",
                "tiers": ["gold", "silver"],
                **by_city,
            },
            {
                "name": "walk-in",
                "match": {"sources": ["store_walk_in"]},
                "strategy": "territory",
                "fallback": "region-wrr",
            },
            {
                "name": "cold",
                "match": {"grades": ["D"], "score_max": 10},
                "strategy": "territory",
                "tiers": ["bronze"],
                **by_city,
            },
            {"name": "by-city", "strategy": "territory", "fallback": "region-wrr"},
            {
                "name": "region-wrr",
                "match": {"sources": ["never-matched-directly"]},
                "strategy": "weighted_round_robin",
            },
        ]
    }


@dataclass(frozen=True)
class LeadRow:
    id: uuid.UUID
    province: str
    city: str
    source: str
    score: int
    product_line: str


def make_leads(count: int, seed: int = 42) -> list[LeadRow]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        i = rng.randrange(PROVINCES)
        out.append(
            LeadRow(
                new_id(),
                _province(i),
                _city(i, rng.randrange(CITIES_PER_PROVINCE)),
                rng.choice(SOURCES),
                min(100, int(rng.betavariate(2, 3) * 101)),
                rng.choice(PRODUCT_LINES),
            )
        )
    return out


# Seeding (not timed)

_LEAD_COLUMNS = [
    "id",
    "tenant_id",
    "owner_org_id",
    "owner_org_path",
    "full_name",
    "phone",
    "province",
    "city",
    "source",
    "status",
    "score",
    "grade",
]
_INTENT_COLUMNS = ["id", "tenant_id", "lead_id", "source", "product_interest", "created_lead"]


async def _wait_replicated(conn: Any, unit_id: uuid.UUID, what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await conn.fetchval(f"SELECT count(*) FROM {what} WHERE id = $1", unit_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} {unit_id} not replicated from the directory")
        await asyncio.sleep(0.2)


async def seed_replicas(dsn: str, tree: Tree) -> None:
    """COPY the regions, dealers and reps into the leads service's replicas, shaped as the
    directory's events would leave them (paths /<tenant>/<code>/…/)."""
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    try:
        await _wait_replicated(conn, tree.hq.id, "org_units")
        now = datetime.now(UTC)
        units = [
            (r.id, tree.tenant_id, tree.hq.id, r.path, r.code, r.code.upper(), KIND_REGION, now)
            for r in tree.regions
        ]
        for region in tree.regions:
            units += [
                (d.id, tree.tenant_id, region.id, d.path, d.code, d.code.upper(), KIND_DEALER, now)
                for d in tree.dealers[region.id]
            ]
        await conn.copy_records_to_table(
            "org_units",
            records=units,
            columns=["id", "tenant_id", "parent_id", "path", "code", "name", "kind", "update_time"],
        )
        users = [
            (u, tree.tenant_id, dealer, ["rep"], True, now)
            for dealer, reps in tree.reps.items()
            for u in reps
        ]
        await conn.copy_records_to_table(
            "users",
            records=users,
            columns=["id", "tenant_id", "org_unit_id", "roles", "active", "update_time"],
        )
    finally:
        await conn.close()


async def seed_leads(dsn: str, tree: Tree, rows: list[LeadRow]) -> None:
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    rng = random.Random(7)
    try:
        for start in range(0, len(rows), COPY_CHUNK):
            chunk = rows[start : start + COPY_CHUNK]
            leads = [
                (
                    x.id,
                    tree.tenant_id,
                    tree.hq.id,
                    tree.hq.path,
                    f"{rng.choice(SURNAMES)}先生" if n % 2 else f"{rng.choice(SURNAMES)}女士",
                    f"139{start + n:08d}",
                    x.province,
                    x.city,
                    x.source,
                    1,
                    x.score,
                    _grade(x.score),
                )
                for n, x in enumerate(chunk)
            ]
            await conn.copy_records_to_table("leads", records=leads, columns=_LEAD_COLUMNS)
            intents = [
                (new_id(), tree.tenant_id, x.id, x.source, x.product_line, True) for x in chunk
            ]
            await conn.copy_records_to_table(
                "lead_intents", records=intents, columns=_INTENT_COLUMNS
            )
        # What autovacuum does soon after a bulk load; the planner needs the statistics.
        await conn.execute("ANALYZE leads; ANALYZE lead_intents")
    finally:
        await conn.close()


async def put_documents(url: str, admin: Admin, tree: Tree, cap: int) -> dict[str, Any]:
    """Profiles, rules, policies and the cap through the REST API, CONCURRENT_PUTS at a time;
    returns the counts, seconds and non-2xx answers."""
    sem = asyncio.Semaphore(CONCURRENT_PUTS)
    failures: list[str] = []
    counts: Counter[str] = Counter()

    async with httpx.AsyncClient(base_url=url, headers=admin.auth, timeout=60) as c:

        async def put(path: str, body: dict[str, Any], kind: str) -> None:
            async with sem:
                r = await c.put(path, json=body)
            counts[kind] += 1
            if r.status_code != 200:
                failures.append(f"PUT {path}: {r.status_code} {r.text[:300]}")

        t0 = time.monotonic()
        await put("/v1/lead-settings", {"private_pool_cap": cap}, "settings")
        await asyncio.gather(
            *(
                put(f"/v1/distribution-profiles/{unit}", doc, "profiles")
                for unit, doc in tree.profiles.items()
            )
        )
        await asyncio.gather(
            *(
                put(f"/v1/distribution-rules/{unit}", doc, "rules")
                for unit, doc in tree.rules.items()
            )
        )
        await asyncio.gather(
            *(
                put(f"/v1/assignment-policies/{unit}", doc, "policies")
                for unit, doc in tree.policies.items()
            )
        )
        seconds = time.monotonic() - t0
    return {"counts": dict(counts), "seconds": seconds, "failures": failures}


# The engine alone


def engine_alone(tree: Tree, rows: list[LeadRow]) -> dict[str, Any]:
    """The same documents compiled in this process and the same leads cascaded from HQ with a
    fresh state: decisions per second of the rules alone (no I/O)."""
    profiles: dict[uuid.UUID, Profile] = {u: parse_profile(d) for u, d in tree.profiles.items()}
    hq = str(tree.hq.id)
    distributors = {
        hq: Distributor(
            hq,
            parse_rules(tree.rules[tree.hq.id]),
            {str(r.id): profiles[r.id] for r in tree.regions},
        )
    }
    for region in tree.regions:
        own = {str(d.id): profiles[d.id] for d in tree.dealers[region.id]}
        distributors[str(region.id)] = Distributor(
            str(region.id), parse_rules(tree.rules[region.id]), own
        )
    facts = [
        LeadFacts(
            province=x.province,
            city=x.city,
            product_line=x.product_line,
            source=x.source,
            grade=_grade(x.score),
            score=x.score,
        )
        for x in rows
    ]
    at = moment_at(datetime.now(UTC), TIMEZONE)
    state = DistributionState()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)  # as the services run
    try:
        t0 = time.perf_counter()
        paths = [cascade(f, state, start=hq, distributors=distributors, at=at) for f in facts]
        seconds = time.perf_counter() - t0
    finally:
        gc.set_threshold(*thresholds)
    decisions = sum(len(p) for p in paths)
    at_dealer = sum(1 for p in paths if len(p) == 2 and p[-1].target_unit_id is not None)
    return {
        "leads": len(rows),
        "decisions": decisions,
        "seconds": seconds,
        "decisions_per_second": decisions / seconds,
        "leads_per_second": len(rows) / seconds,
        "at_dealer": at_dealer,
    }


# Measured


async def assign_all(url: str, admin: Admin, tree: Tree, mode: str) -> dict[str, Any]:
    """Every dealer's pool through subtree runs: ``hq`` one ``:runSubtree`` from HQ,
    ``regions`` one per region, all at once."""
    roots = [tree.hq] if mode == "hq" else tree.regions
    failures: list[str] = []
    assigned = 0
    left: Counter[str] = Counter()
    units = 0
    async with httpx.AsyncClient(base_url=url, headers=admin.auth, timeout=None) as c:

        async def one(root: Unit) -> None:
            nonlocal assigned, units
            r = await c.post(f"/v1/assignment-policies/{root.id}:runSubtree")
            if r.status_code != 200:
                failures.append(f"assign {root.code}: {r.status_code} {r.text[:300]}")
                return
            body = r.json()
            assigned += int(body["assigned"])
            left.update(body["left_in_pool"])
            units += len(body["units"])

        t0 = time.monotonic()
        await asyncio.gather(*(one(root) for root in roots))
        seconds = time.monotonic() - t0
    if units != len(tree.all_dealers):
        failures.append(f"subtree runs assigned in {units} units, {len(tree.all_dealers)} dealers")
    return {
        "assigned": assigned,
        "left": dict(left),
        "seconds": seconds,
        "failures": failures,
        "runs": len(roots),
    }


def distribute(url: str, admin: Admin, hq: Unit) -> tuple[dict[str, Any], float, str | None]:
    with httpx.Client(base_url=url, headers=admin.auth, timeout=None) as c:
        t0 = time.monotonic()
        r = c.post(f"/v1/distribution-rules/{hq.id}:run")
        seconds = time.monotonic() - t0
    if r.status_code != 200:
        return {}, seconds, f"distribution run: {r.status_code} {r.text[:500]}"
    return dict(r.json()), seconds, None


async def _pending(dsn: str) -> int:
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM crm_outbox WHERE published_at IS NULL")
        )
    finally:
        await conn.close()


async def check(dsn: str, tree: Tree, leads: int, cap: int) -> tuple[dict[str, Any], list[str]]:
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    try:
        total = int(await conn.fetchval("SELECT count(*) FROM leads"))
        bad_owner = int(
            await conn.fetchval(
                "SELECT count(*) FROM leads l LEFT JOIN org_units o ON o.id = l.owner_org_id "
                "WHERE o.id IS NULL OR o.path <> l.owner_org_path"
            )
        )
        per_owner = {
            r["owner_org_id"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT owner_org_id, count(*) AS n FROM leads GROUP BY owner_org_id"
            )
        }
        loads = {
            r["org_unit_id"]: int(r["today"])
            for r in await conn.fetch("SELECT org_unit_id, today FROM distribution_load")
        }
        history = int(await conn.fetchval("SELECT count(*) FROM lead_owner_history"))
        outbox = {
            r["event_type"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT event_type, count(*) AS n FROM crm_outbox GROUP BY event_type"
            )
        }
        # The runs' batch events, opened: each assigned lead must be in exactly one.
        in_batches: Counter[str] = Counter()
        for r in await conn.fetch(
            "SELECT data FROM crm_outbox WHERE event_type = 'crm.leads.lead_batch.assigned.v1'"
        ):
            payload = parse_event(r["data"]).payload
            assert isinstance(payload, events_pb2.LeadBatchAssigned)
            in_batches.update(x.lead_id for x in payload.leads)
        pending = int(
            await conn.fetchval("SELECT count(*) FROM crm_outbox WHERE published_at IS NULL")
        )
        assigned = int(
            await conn.fetchval("SELECT count(*) FROM leads WHERE assignee_id IS NOT NULL")
        )
        max_held = int(
            await conn.fetchval(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM leads "
                "WHERE assignee_id IS NOT NULL AND status IN (1, 2) GROUP BY assignee_id) h"
            )
        )
        wrong_unit = int(
            await conn.fetchval(
                "SELECT count(*) FROM leads l JOIN users u ON u.id = l.assignee_id "
                "WHERE u.org_unit_id <> l.owner_org_id"
            )
        )
        unmatched = int(await conn.fetchval("SELECT count(*) FROM distribution_unmatched"))
        offers = int(await conn.fetchval("SELECT count(*) FROM lead_acceptances"))
    finally:
        await conn.close()
    dealer_ids = {d.id for d in tree.all_dealers}
    region_ids = {r.id for r in tree.regions}
    at_dealers = sum(n for u, n in per_owner.items() if u in dealer_ids)
    at_regions = sum(n for u, n in per_owner.items() if u in region_ids)
    at_hq = per_owner.get(tree.hq.id, 0)
    over_count = [d for d in dealer_ids if per_owner.get(d, 0) > tree.capacity[d]]
    over_counter = [d for d in dealer_ids if loads.get(d, 0) > tree.capacity[d]]
    counter_mismatch = [d for d in dealer_ids if loads.get(d, 0) != per_owner.get(d, 0)]
    full = sum(1 for d in dealer_ids if per_owner.get(d, 0) == tree.capacity[d])
    hops = 2 * at_dealers + at_regions
    batch_events = outbox.get("crm.leads.lead_batch.distributed.v1", 0)
    assigned_in_events = len(in_batches)
    owners = len([u for u in per_owner if u != tree.hq.id])
    verdicts: list[tuple[bool, str]] = [
        (total != leads, f"{total:,} leads in the table, {leads:,} seeded"),
        (bool(bad_owner), f"{bad_owner:,} leads whose owner is not a replicated unit at its path"),
        (at_dealers + at_regions + at_hq != total, "leads owned by units outside the tree"),
        (bool(over_count), f"{len(over_count)} dealers hold more leads than their daily capacity"),
        (bool(over_counter), f"{len(over_counter)} dealers' counters exceed their capacity"),
        (
            bool(counter_mismatch),
            f"{len(counter_mismatch)} dealers' counters differ from the leads they received",
        ),
        (history != hops, f"{history:,} owner-history rows, {hops:,} hops expected"),
        (batch_events < owners, f"{batch_events} lead_batch.distributed events, {owners} owners"),
        (
            assigned_in_events != assigned or any(n != 1 for n in in_batches.values()),
            f"{assigned_in_events:,} leads in lead_batch.assigned events (some more than once: "
            f"{sum(1 for n in in_batches.values() if n != 1)}) for {assigned:,} assigned leads",
        ),
        (max_held > cap, f"a rep holds {max_held} leads, past the private-pool cap {cap}"),
        (bool(wrong_unit), f"{wrong_unit} leads held by a rep of another unit"),
        (
            offers != at_dealers + at_regions,
            f"{offers:,} acceptance offers for {at_dealers + at_regions:,} moved leads",
        ),
    ]
    problems = [message for failed, message in verdicts if failed]
    return {
        "leads": total,
        "at_dealers": at_dealers,
        "at_regions": at_regions,
        "at_hq": at_hq,
        "dealers_at_capacity": full,
        "owner_history_rows": history,
        "unmatched_flags": unmatched,
        "acceptance_offers": offers,
        "assigned": assigned,
        "max_held_by_a_rep": max_held,
        "outbox": outbox,
        "outbox_pending": pending,
    }, problems


async def ownership_floor(dsn: str, tree: Tree) -> float:
    """Seconds for the same number of rows to change owner (back to HQ) by raw asyncpg
    ``UPDATE … FROM unnest`` in FLOOR_BATCH-row transactions, in id order: the physical floor
    of moving ownership in this table with its indexes (run after the checks)."""
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    try:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM leads ORDER BY id")]
        stmt = (
            "UPDATE leads l SET owner_org_id = u.to_id, owner_org_path = u.to_path, "
            "version = l.version + 1, update_time = now() "
            "FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS u (id, to_id, to_path) "
            "WHERE l.id = u.id"
        )
        t0 = time.monotonic()
        for start in range(0, len(ids), FLOOR_BATCH):
            chunk = ids[start : start + FLOOR_BATCH]
            async with conn.transaction():
                await conn.execute(
                    stmt, chunk, [tree.hq.id] * len(chunk), [tree.hq.path] * len(chunk)
                )
        return time.monotonic() - t0
    finally:
        await conn.close()


def run(ctx: BenchContext) -> ScenarioResult:
    stack = Stack(ctx.servers)
    try:
        return _run(stack)
    finally:
        stack.close()


def _run(stack: Stack) -> ScenarioResult:
    n_leads = int(os.environ.get("BENCH_DISTRIBUTION_LEADS", "1000000"))
    cap = max(1, round(n_leads / (REGIONS * DEALERS_PER_REGION * REPS_PER_DEALER)))

    async def migrate() -> None:
        await stack.migrate("directory")
        await stack.migrate("leads")

    progress("  migrating, starting directory + leads processes")
    asyncio.run(migrate())
    directory = stack.spawn("directory")
    leads = stack.spawn("leads")
    stack.wait_ready("directory", "leads")
    admin = asyncio.run(_tenant(directory.url, stack.bootstrap_token))
    dsn = asyncpg_dsn(stack.db_url("leads"))
    tree = build_tree(admin, n_leads)
    progress(
        f"  seeding the replicas: {REGIONS} regions, {len(tree.all_dealers):,} dealers, "
        f"{sum(len(r) for r in tree.reps.values()):,} reps"
    )
    asyncio.run(seed_replicas(dsn, tree))
    progress("  profiles, rules, assignment policies through REST")
    docs = asyncio.run(put_documents(leads.url, admin, tree, cap))
    progress(f"    {docs['counts']} in {docs['seconds']:.1f} s")
    progress(f"  generating and COPYing {n_leads:,} pooled leads owned by HQ")
    rows = make_leads(n_leads)
    t0 = time.monotonic()
    asyncio.run(seed_leads(dsn, tree, rows))
    seed_seconds = time.monotonic() - t0
    progress("  the engine alone, in this process, on the same rules and leads")
    engine = engine_alone(tree, rows)
    del rows
    gc.collect()
    problems: list[str] = list(docs["failures"][:10])
    rss_ready = rss_bytes(leads.pid)
    with ProcessMonitor(leads.pid) as monitor:
        progress(f"  measured: POST /v1/distribution-rules/<hq>:run over {n_leads:,} leads")
        with CpuWindow(leads.pid) as cpu_dist:
            dist, dist_seconds, error = distribute(leads.url, admin, tree.hq)
        if error:
            problems.append(error)
        progress(f"    {dist_seconds:.1f} s; assignment at {len(tree.all_dealers):,} dealers")
        admin = Admin(
            admin.slug,
            admin.tenant_id,
            admin.root_id,
            admin.root_path,
            asyncio.run(_login(directory.url, admin.slug)),
        )
        with CpuWindow(leads.pid) as cpu_assign:
            assign = asyncio.run(assign_all(leads.url, admin, tree, ASSIGN_MODE))
        problems += assign["failures"][:10]
        peak = monitor.peak()
    progress(f"    {assign['seconds']:.1f} s; waiting for the relay to drain the outbox")
    drain_started = time.monotonic()
    pending = asyncio.run(_pending(dsn))
    while pending and time.monotonic() - drain_started < 120:
        time.sleep(0.5)
        pending = asyncio.run(_pending(dsn))
    drain = time.monotonic() - drain_started
    progress("  checks")
    counts, found = asyncio.run(check(dsn, tree, n_leads, cap))
    problems += found
    progress(f"  raw floor: {n_leads:,} ownership changes by asyncpg in {FLOOR_BATCH}-row batches")
    floor_seconds = asyncio.run(ownership_floor(dsn, tree))
    return _result(
        stack=stack,
        n_leads=n_leads,
        cap=cap,
        tree=tree,
        docs=docs,
        seed_seconds=seed_seconds,
        engine=engine,
        dist=dist,
        dist_seconds=dist_seconds,
        assign=assign,
        cpu=(cpu_dist.utilisation, cpu_assign.utilisation),
        rss_ready=rss_ready,
        peak=peak,
        drain=(drain, pending),
        counts=counts,
        floor_seconds=floor_seconds,
        problems=problems,
    )


def _meets(value: float, target: float) -> str:
    return f"{fmt_ratio(value / target)} of target ({'meets' if value >= target else 'below'})"


def _result(
    *,
    stack: Stack,
    n_leads: int,
    cap: int,
    tree: Tree,
    docs: dict[str, Any],
    seed_seconds: float,
    engine: dict[str, Any],
    dist: dict[str, Any],
    dist_seconds: float,
    assign: dict[str, Any],
    cpu: tuple[float | None, float | None],
    rss_ready: int | None,
    peak: dict[str, Any],
    drain: tuple[float, int],
    counts: dict[str, Any],
    floor_seconds: float,
    problems: list[str],
) -> ScenarioResult:
    title = "distribute (HQ → region → dealer) and assign a pool of leads, end to end"
    result = ScenarioResult(name="lead_distribution", title=title)
    dist_rate = n_leads / dist_seconds
    assign_rate = assign["assigned"] / assign["seconds"] if assign["seconds"] else 0.0
    total_seconds = dist_seconds + assign["seconds"]
    combined = n_leads / total_seconds
    floor_rate = n_leads / floor_seconds
    load1, load5, _ = os.getloadavg()
    dealers = len(tree.all_dealers)
    capacity = sum(tree.capacity.values())
    result.notes = [
        f"tree: 1 HQ, {REGIONS} regions, {dealers:,} dealers, "
        f"{sum(len(r) for r in tree.reps.values()):,} reps (replicas COPYed); dealer daily "
        f"capacities total {capacity:,} (regions {sorted(BINDING_REGIONS)} at "
        f"{BINDING_FACTOR:.0%} of their provinces' leads, others {LOOSE_FACTOR:.0%}); "
        f"private-pool cap {cap}",
        f"documents through REST ({CONCURRENT_PUTS} concurrent): {docs['counts']} in "
        f"{docs['seconds']:.1f} s; {n_leads:,} leads + first enquiries COPYed in "
        f"{seed_seconds:.1f} s",
        f"outcome: {counts['at_dealers']:,} at dealers ({counts['dealers_at_capacity']:,} "
        f"dealers full), {counts['at_regions']:,} left in region pools, {counts['at_hq']:,} "
        f"at HQ; {counts['assigned']:,} assigned to reps (left: {assign['left']})",
        f"namespace {stack.namespace}; machine: {os.cpu_count()} CPUs, load average now "
        f"{load1:.2f} / {load5:.2f} (1 / 5 min; other work on the machine skews every figure)",
    ]
    cpu_d, cpu_a = cpu
    peak_mb = peak["peak_rss_mb"]
    result.rows = [
        Row(
            "distribution: POST …/{hq}:run (cascade, persisted)",
            fmt_rate(dist_rate, "leads/s"),
            f"{n_leads:,} leads in {dist_seconds:.1f} s",
            _meets(dist_rate, TARGET_LEADS_PER_SECOND),
        ),
        Row(
            f"assignment: POST …/{{{ASSIGN_MODE}}}:runSubtree × {assign['runs']}",
            fmt_rate(assign_rate, "leads/s"),
            f"{assign['assigned']:,} leads in {assign['seconds']:.1f} s "
            f"({assign['runs']} concurrent)",
            _meets(assign_rate, TARGET_LEADS_PER_SECOND),
        ),
        Row(
            "end to end: distribute + assign",
            fmt_rate(combined, "leads/s"),
            f"target ≥ {TARGET_LEADS_PER_SECOND:,.0f} ({total_seconds:.1f} s)",
            _meets(combined, TARGET_LEADS_PER_SECOND),
        ),
        Row(
            "raw floor: UPDATE owner FROM unnest, 5,000/tx",
            fmt_rate(floor_rate, "rows/s"),
            f"{n_leads:,} rows in {floor_seconds:.1f} s",
            f"distribution = {fmt_ratio(dist_rate / floor_rate)} of it",
        ),
        Row(
            "rules alone (engine in this process)",
            fmt_rate(engine["decisions_per_second"], "decisions/s"),
            f"target ≥ {TARGET_DECISIONS_PER_SECOND:,.0f}; "
            f"{engine['decisions']:,} decisions in {engine['seconds']:.2f} s",
            _meets(engine["decisions_per_second"], TARGET_DECISIONS_PER_SECOND),
        ),
        Row(
            "leads process CPU: distribution / assignment",
            f"{fmt_ratio(cpu_d)} / {fmt_ratio(cpu_a)}",
            "1.00 = one core busy",
        ),
        Row(
            "leads process RSS: ready / peak",
            f"{(rss_ready or 0) / MB:.0f} / {peak_mb} MB",
            str(peak["source"]),
        ),
        Row(
            "outbox: pending after the runs / drained",
            f"{drain[1]:,}",
            f"waited {drain[0]:.1f} s; "
            f"{counts['outbox'].get('crm.leads.lead_batch.distributed.v1', 0):,} "
            f"lead_batch.distributed + "
            f"{counts['outbox'].get('crm.leads.lead_batch.assigned.v1', 0):,} "
            "lead_batch.assigned events",
        ),
    ]
    result.problems = problems
    result.data = {
        "leads": n_leads,
        "dealers": dealers,
        "private_pool_cap": cap,
        "dealer_capacity_total": capacity,
        "documents": {k: v for k, v in docs.items() if k != "failures"},
        "seed_seconds": seed_seconds,
        "distribution": {
            "seconds": dist_seconds,
            "leads_per_second": dist_rate,
            "distributed": dist.get("distributed"),
            "unmatched": dist.get("unmatched"),
            "cpu": cpu_d,
        },
        "assignment": {
            "seconds": assign["seconds"],
            "assigned": assign["assigned"],
            "left_in_pool": assign["left"],
            "leads_per_second": assign_rate,
            "cpu": cpu_a,
            "mode": ASSIGN_MODE,
            "runs": assign["runs"],
        },
        "end_to_end_leads_per_second": combined,
        "target_leads_per_second": TARGET_LEADS_PER_SECOND,
        "raw_ownership_floor_rows_per_second": floor_rate,
        "engine": engine,
        "target_decisions_per_second": TARGET_DECISIONS_PER_SECOND,
        "checks": counts,
        "outbox_drain_seconds": drain[0],
        "leads_process": {"rss_ready_mb": round((rss_ready or 0) / MB, 1), **peak},
        "loadavg_at_end": [round(load1, 2), round(load5, 2)],
    }
    return result


SCENARIO = Scenario(
    name="lead_distribution",
    title="distribute (HQ → region → dealer) and assign a pool of leads, end to end",
    run=run,
)
