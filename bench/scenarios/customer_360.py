"""customer_360: ``GET /v1/customers/{id}:view360`` on the customers service — the profile,
contacts and history (local) plus the customer's open opportunities (sales), open tickets
(service-desk) and the campaign touches and score of the leads converted into it (leads),
fetched concurrently over gRPC under ``CUSTOMER360_DEADLINE_SECONDS`` each; a section that
misses its deadline is left empty and named in ``partial``.

Setup (not timed): directory, leads, customers, sales and service-desk migrated and started
as separate processes (customers pointed at the other three by ``SALES_GRPC_TARGET`` /
``SERVICE_DESK_GRPC_TARGET`` / ``LEADS_GRPC_TARGET``); a tenant and a dealer rep through the
directory's REST API; then as that rep, 16 requests at a time: ``BENCH_C360_CUSTOMERS``
(2,000) customers with 3 contacts each (``POST /v1/customers``), an opportunity for every 2nd
customer (``POST /v1/opportunities``) and a ticket for every 3rd (``POST /v1/tickets``); a
lead with a campaign intent for every 2nd customer the other way round (``POST
/v1/leads:batchCreate``), recorded as converted into that customer by one SQL statement in
the leads database (a completed ``lead_conversions`` row and the lead CONVERTED). Running the
saga itself is the lead_conversion scenario's job: here it would add contacts and
opportunities to the seeded customers and minutes of setup.

Measured, each by an open-loop generator process at ``BENCH_C360_RATE`` (200/s), latency
from each request's due instant, cycling over the customers in a shuffled order:

1. limits: ``GET /healthz`` of the customers process (HTTP stack, no I/O), ``GET
   /v1/customers/{id}`` (the local part of the view: one read) and an empty gRPC call to the
   sales process at the same rate (``bench.grpcfloor``: the grpc.aio runtime's CPU per call
   on the server and on the caller, which the view pays three times), ``BENCH_LIMIT_SECONDS``
   each after 1 s warm-up;
2. the 360 view, ``BENCH_WARMUP_SECONDS`` + ``BENCH_C360_SECONDS`` (20).

The target (p99 ≤ 30 ms at 200 requests/s) is printed, never asserted. Problems: any
non-2xx answer or socket error, and a sampled content check after the load (contacts, open
opportunities, open tickets, campaign touches and score of 50 customers equal to what was
seeded)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench import grpcfloor
from bench.context import BenchContext, Scenario
from bench.load import LoadOptions, LoadResult, LoadSpec, describe_generator, run_load
from bench.paced import PacedResult, Request, Target, run_paced
from bench.procstats import CpuWindow, ProcessMonitor
from bench.report import Row, ScenarioResult, fmt_ms, fmt_ratio, progress
from bench.stack import DealerUser, Stack, asyncpg_dsn, create_dealer_user

TARGET_P99_MS = 30.0
TARGET_RATE = 200.0
SERVICES = ("directory", "leads", "customers", "sales", "service-desk")
CONTACTS = 3
CONCURRENT_SEED = 16
CHECK_SAMPLE = 50
LEAD_BATCH = 1000
CONVERSION_COMPLETED = 3  # crm.leads.v1.ConversionState
LEAD_CONVERTED = 3  # crm.leads.v1.LeadStatus
# One statement: a completed conversion per (lead, customer) and the lead marked converted,
# as the saga leaves them.
RECORD_CONVERSIONS = """
WITH done AS (
    INSERT INTO lead_conversions (id, tenant_id, lead_id, state, prev_status, owner_org_id,
        owner_org_path, actor, actor_org_path, options, customer_id, deadline)
    SELECT x.id, l.tenant_id, l.id, $4, l.status, l.owner_org_id, l.owner_org_path, 'bench',
        l.owner_org_path, '{}'::jsonb, x.customer_id, now()
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS x (id, lead_id, customer_id)
    JOIN leads l ON l.id = x.lead_id
    RETURNING id, lead_id
)
UPDATE leads SET status = $5, conversion_id = done.id FROM done WHERE leads.id = done.lead_id
"""


def classify_360(status: int, body: bytes) -> str:
    """full / partial <section>=<gRPC code> (module level: worker processes import it)."""
    if status != 200:
        return f"http {status}"
    try:
        doc = json.loads(body)
    except ValueError:
        return "unreadable"
    partial = doc.get("partial") or []
    if not partial:
        return "full"
    reasons = doc.get("partial_reasons") or {}
    return "partial " + ",".join(
        f"{name}={str(reasons.get(name, '')).split(':')[0]}" for name in sorted(partial)
    )


def classify_plain(status: int, body: bytes) -> str:
    return "ok" if 200 <= status <= 299 else f"http {status}"


def _has_opportunity(i: int) -> bool:
    return i % 2 == 0


def _has_ticket(i: int) -> bool:
    return i % 3 == 0


def _has_lead(i: int) -> bool:
    return i % 2 == 1


def _campaign(i: int) -> str:
    return f"车展-{i % 7}"


async def _seed(
    url: dict[str, str], user: DealerUser, count: int
) -> tuple[list[str], dict[str, str]]:
    """Customers (with contacts), opportunities, tickets, leads; returns the customer ids
    (the leads' conversions are recorded by ``_record_conversions``)."""
    sem = asyncio.Semaphore(CONCURRENT_SEED)

    async def post(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with sem:
            r = await c.post(path, json=body)
        if r.status_code != 201:
            raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text[:500]}")
        found: dict[str, Any] = r.json()
        return found

    async def customer(c: httpx.AsyncClient, i: int) -> str:
        body = {
            "kind": "ORGANIZATION",
            "display_name": f"全景客户{i:05d}有限公司",
            "province": "浙江",
            "city": "杭州",
            "phone": f"+86137{i:08d}",
            "contacts": [
                {
                    "full_name": f"联系人 {i}-{k}",
                    "title": ("采购经理", "总经理", "车队主管")[k],
                    "phone": f"+86136{i:06d}{k:02d}",
                }
                for k in range(CONTACTS)
            ],
        }
        return str((await post(c, "/v1/customers", body))["id"])

    async def opportunity(c: httpx.AsyncClient, i: int, cid: str) -> None:
        await post(
            c,
            "/v1/opportunities",
            {
                "title": f"车队更新 {i}",
                "customer_id": cid,
                "amount": {"currency_code": "CNY", "amount": "180000.00"},
                "product": "EV-X",
                "close_date": "2031-06-30",
            },
        )

    async def ticket(c: httpx.AsyncClient, i: int, cid: str) -> None:
        await post(
            c, "/v1/tickets", {"subject": f"保养预约 {i}", "customer_id": cid, "priority": "NORMAL"}
        )

    async def lead_batch(c: httpx.AsyncClient, indexes: list[int]) -> list[str]:
        body = {
            "leads": [
                {
                    "full_name": f"线索 {i}",
                    "phone": f"+86135{i:08d}",
                    "company": f"全景客户{i:05d}有限公司",
                    "province": "浙江",
                    "city": "杭州",
                    "source": "bench",
                    "intent": {"campaign": _campaign(i), "product_interest": "EV-X"},
                }
                for i in indexes
            ]
        }
        async with sem:
            r = await c.post("/v1/leads:batchCreate", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"leads:batchCreate answered {r.status_code}: {r.text[:500]}")
        results = r.json()["results"]
        if any(res["outcome"] != "CREATED" for res in results):
            raise RuntimeError(f"leads not all created: {json.dumps(results)[:500]}")
        return [str(res["lead"]["id"]) for res in results]

    headers = user.auth
    with_lead = [i for i in range(count) if _has_lead(i)]
    async with (
        httpx.AsyncClient(base_url=url["customers"], headers=headers, timeout=60) as cc,
        httpx.AsyncClient(base_url=url["sales"], headers=headers, timeout=60) as sc,
        httpx.AsyncClient(base_url=url["service-desk"], headers=headers, timeout=60) as tc,
        httpx.AsyncClient(base_url=url["leads"], headers=headers, timeout=120) as lc,
    ):
        ids, lead_ids = await asyncio.gather(
            asyncio.gather(*(customer(cc, i) for i in range(count))),
            asyncio.gather(
                *(
                    lead_batch(lc, with_lead[k : k + LEAD_BATCH])
                    for k in range(0, len(with_lead), LEAD_BATCH)
                )
            ),
        )
        await asyncio.gather(
            *(opportunity(sc, i, cid) for i, cid in enumerate(ids) if _has_opportunity(i)),
            *(ticket(tc, i, cid) for i, cid in enumerate(ids) if _has_ticket(i)),
        )
    leads = [lead for batch in lead_ids for lead in batch]
    return list(ids), dict(zip(leads, (ids[i] for i in with_lead), strict=True))


async def _record_conversions(stack: Stack, converted: dict[str, str]) -> None:
    """Each lead converted into its customer (lead id -> customer id), in one statement."""
    import asyncpg

    from crm_platform.ids import new_id

    conn: Any = await asyncpg.connect(asyncpg_dsn(stack.db_url("leads")))
    try:
        await conn.execute(
            RECORD_CONVERSIONS,
            [new_id() for _ in converted],
            [uuid.UUID(lead) for lead in converted],
            [uuid.UUID(cid) for cid in converted.values()],
            CONVERSION_COMPLETED,
            LEAD_CONVERTED,
        )
    finally:
        await conn.close()


async def _content_check(url: str, user: DealerUser, ids: list[str]) -> list[str]:
    """The view of a sample of customers against what was seeded (one at a time, idle)."""
    wrong: list[str] = []
    sample = sorted(random.Random(360).sample(range(len(ids)), min(CHECK_SAMPLE, len(ids))))
    async with httpx.AsyncClient(base_url=url, headers=user.auth, timeout=10) as c:
        for i in sample:
            r = await c.get(f"/v1/customers/{ids[i]}:view360")
            if r.status_code != 200:
                wrong.append(f"customer {i}: {r.status_code} {r.text[:200]}")
                continue
            doc = r.json()
            got = (
                len(doc["customer"].get("contacts", [])),
                len(doc.get("open_opportunities", [])),
                len(doc.get("open_tickets", [])),
                [t["campaign"] for t in doc.get("campaign_touches", [])],
                doc.get("score") is not None,
                doc.get("partial", []),
            )
            want: tuple[int, int, int, list[str], bool, list[str]] = (
                CONTACTS,
                int(_has_opportunity(i)),
                int(_has_ticket(i)),
                [_campaign(i)] if _has_lead(i) else [],
                _has_lead(i),
                [],
            )
            if got != want:
                wrong.append(
                    f"customer {i}: (contacts, opps, tickets, touches, score, partial) "
                    f"{got} != {want}"
                )
    return wrong


@dataclass
class _Config:
    customers: int
    rate: float
    seconds: float
    warmup: float

    @classmethod
    def from_env(cls, ctx: BenchContext) -> _Config:
        return cls(
            customers=int(os.environ.get("BENCH_C360_CUSTOMERS", "2000")),
            rate=float(os.environ.get("BENCH_C360_RATE", str(TARGET_RATE))),
            seconds=float(os.environ.get("BENCH_C360_SECONDS", "20")),
            warmup=ctx.load.warmup,
        )


def run(ctx: BenchContext) -> ScenarioResult:
    stack = Stack(ctx.servers)
    try:
        return _run(ctx, stack)
    finally:
        stack.close()


def _run(ctx: BenchContext, stack: Stack) -> ScenarioResult:
    cfg = _Config.from_env(ctx)

    async def migrate() -> None:
        for service in SERVICES:
            await stack.migrate(service)

    t0 = time.monotonic()
    progress("  migrating, starting directory + leads + sales + service-desk + customers")
    asyncio.run(migrate())
    stack.spawn("directory")
    leads = stack.spawn("leads")
    sales = stack.spawn("sales")
    desk = stack.spawn("service-desk")
    customers = stack.spawn(
        "customers",
        SALES_GRPC_TARGET=sales.grpc_target,
        SERVICE_DESK_GRPC_TARGET=desk.grpc_target,
        LEADS_GRPC_TARGET=leads.grpc_target,
    )
    stack.wait_ready(*SERVICES)
    startup = time.monotonic() - t0
    user = asyncio.run(create_dealer_user(stack.processes["directory"].url, stack.bootstrap_token))
    progress(
        f"  seeding {cfg.customers:,} customers x {CONTACTS} contacts, opportunities, tickets, "
        "converted leads"
    )
    t1 = time.monotonic()
    urls = {name: sp.url for name, sp in stack.processes.items()}
    ids, converted = asyncio.run(_seed(urls, user, cfg.customers))
    asyncio.run(_record_conversions(stack, converted))
    seed_seconds = time.monotonic() - t1
    order = list(ids)
    random.Random(36).shuffle(order)
    headers = dict(user.auth)
    limit_warmup = min(1.0, cfg.warmup)
    monitors = {name: ProcessMonitor(sp.pid) for name, sp in stack.processes.items()}
    for m in monitors.values():
        m.__enter__()
    try:
        progress(f"  limits: GET /healthz, GET /v1/customers/{{id}} ({ctx.limit_seconds:g} s each)")
        plain = Target(customers.url, headers, classify_plain, timeout=10)
        healthz = run_paced(
            plain,
            [Request("GET", "/healthz")],
            rate=cfg.rate,
            seconds=ctx.limit_seconds,
            warmup=limit_warmup,
        )
        get_one = run_paced(
            plain,
            [Request("GET", f"/v1/customers/{cid}") for cid in order],
            rate=cfg.rate,
            seconds=ctx.limit_seconds,
            warmup=limit_warmup,
        )
        progress(f"  limit: empty gRPC call to sales ({ctx.limit_seconds:g} s)")
        with CpuWindow(sales.pid) as sales_cpu:
            grpc_floor = grpcfloor.run(
                sales.grpc_target, rate=cfg.rate, seconds=ctx.limit_seconds, warmup=limit_warmup
            )
        closed = LoadOptions(
            connections=ctx.load.connections,
            seconds=ctx.limit_seconds,
            warmup=limit_warmup,
            generator=ctx.load.generator,
            wrk_threads=ctx.load.wrk_threads,
            python_procs=ctx.load.python_procs,
        )
        progress(f"  capacity: GET :view360 closed loop ({ctx.limit_seconds:g} s)")
        capacity = run_load(
            LoadSpec(url=f"{customers.url}/v1/customers/{order[0]}:view360", headers=headers),
            closed,
        )
        progress(f"  GET :view360 at {cfg.rate:g}/s ({cfg.warmup:g} s warm-up + {cfg.seconds:g} s)")
        cpus = {name: CpuWindow(sp.pid) for name, sp in stack.processes.items()}
        for c in cpus.values():
            c.__enter__()
        view = run_paced(
            Target(customers.url, headers, classify_360, timeout=10),
            [Request("GET", f"/v1/customers/{cid}:view360") for cid in order],
            rate=cfg.rate,
            seconds=cfg.seconds,
            warmup=cfg.warmup,
        )
        for c in cpus.values():
            c.__exit__(None, None, None)
        wrong = asyncio.run(_content_check(customers.url, user, ids))
    finally:
        for m in monitors.values():
            m.__exit__(None, None, None)
    return _result(
        ctx=ctx,
        stack=stack,
        cfg=cfg,
        startup=startup,
        seed_seconds=seed_seconds,
        healthz=healthz,
        get_one=get_one,
        grpc_floor=grpc_floor,
        grpc_server_cpu=sales_cpu.utilisation,
        capacity=capacity,
        capacity_load=describe_generator(closed),
        view=view,
        wrong=wrong,
        cpus={name: c.utilisation for name, c in cpus.items()},
        peaks={name: m.peak() for name, m in monitors.items()},
    )


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} µs"


def _latency_row(name: str, load: PacedResult) -> Row:
    return Row(
        name,
        f"p50 {fmt_ms(load.pct(50))}",
        f"p99 {fmt_ms(load.pct(99))}, max {fmt_ms(load.max_ms)} ({load.rate:,.0f} req/s)",
    )


def _result(
    *,
    ctx: BenchContext,
    stack: Stack,
    cfg: _Config,
    startup: float,
    seed_seconds: float,
    healthz: PacedResult,
    get_one: PacedResult,
    grpc_floor: grpcfloor.GrpcFloor,
    grpc_server_cpu: float | None,
    capacity: LoadResult,
    capacity_load: str,
    view: PacedResult,
    wrong: list[str],
    cpus: dict[str, float | None],
    peaks: dict[str, dict[str, Any]],
) -> ScenarioResult:
    title = "customer 360 view (local read + sales, service-desk and leads over gRPC)"
    result = ScenarioResult(name="customer_360", title=title)
    answered = max(1, view.sent - view.errors)
    partial = sum(n for name, n in view.classes.items() if name.startswith("partial"))
    p99 = view.pct(99)
    opps = sum(1 for i in range(cfg.customers) if _has_opportunity(i))
    tickets = sum(1 for i in range(cfg.customers) if _has_ticket(i))
    converted = sum(1 for i in range(cfg.customers) if _has_lead(i))
    load1, _, _ = os.getloadavg()
    # The server's share of its process's CPU over the floor's window, per call.
    server_us = (
        grpc_server_cpu * grpc_floor.seconds / grpc_floor.calls * 1e6
        if grpc_server_cpu is not None and grpc_floor.calls
        else None
    )
    fanout_ms = (
        3 * (server_us + grpc_floor.client_cpu_us_per_call) / 1000
        if server_us is not None
        else None
    )
    known = [c for c in cpus.values() if c is not None]
    view_cpu_ms = sum(known) / view.rate * 1000 if known and view.rate else None
    result.notes = [
        f"load: one open-loop generator process, {cfg.rate:g} req/s, latency from each "
        f"request's due instant; the view {cfg.seconds:g} s after {cfg.warmup:g} s warm-up, "
        f"limits {ctx.limit_seconds:g} s each",
        f"setup: {cfg.customers:,} customers x {CONTACTS} contacts, {opps:,} opportunities, "
        f"{tickets:,} tickets, {converted:,} leads through the REST APIs (their conversions "
        f"recorded in SQL) in {seed_seconds:.1f} s; services up in "
        f"{startup:.1f} s",
        f"servers: {ctx.servers.describe()['postgres']} | {ctx.servers.nats_url}; "
        f"namespace {stack.namespace}",
        f"machine: {os.cpu_count()} CPUs, load average now {load1:.2f} "
        "(other work on the machine skews every figure)",
    ]
    rows = [
        _latency_row(f"limit: GET /healthz (customers) at {cfg.rate:g}/s", healthz),
        _latency_row(f"limit: GET /v1/customers/{{id}} at {cfg.rate:g}/s", get_one),
        Row(
            f"limit: empty gRPC call (Health/Check on sales) at {cfg.rate:g}/s",
            f"p50 {fmt_ms(grpc_floor.p50_ms)}",
            f"p99 {fmt_ms(grpc_floor.p99_ms)}; CPU per call: server "
            f"{_us(server_us)}, caller {_us(grpc_floor.client_cpu_us_per_call)}",
        ),
        Row(
            f"capacity: GET :view360 (one customer), closed loop, {capacity.connections} conns",
            f"{capacity.rps:,.0f} req/s",
            f"p50 {fmt_ms(capacity.p50_ms)}, p99 {fmt_ms(capacity.p99_ms)}; {capacity_load}",
            f"{fmt_ratio(capacity.rps / cfg.rate)} of the paced rate",
        ),
        Row(
            f"GET /v1/customers/{{id}}:view360 at {cfg.rate:g}/s",
            f"{view.rate:,.1f} req/s sent",
            f"{view.sent:,} counted, max send lateness {fmt_ms(view.max_lateness_ms)}",
        ),
        Row("  latency p50 / p90", f"{fmt_ms(view.pct(50))} / {fmt_ms(view.pct(90))}"),
        Row(
            "  latency p99",
            fmt_ms(p99),
            f"target ≤ {TARGET_P99_MS:g} ms at {TARGET_RATE:g}/s",
            f"{fmt_ratio(p99 / TARGET_P99_MS)} of target "
            f"({'meets' if p99 <= TARGET_P99_MS else 'above'})",
        ),
        Row("  latency max", fmt_ms(view.max_ms)),
        Row(
            "  p99 ÷ GET customer p99",
            "",
            "",
            fmt_ratio(p99 / get_one.pct(99) if get_one.pct(99) else None),
        ),
        Row(
            "  p50 ÷ GET customer p50",
            "",
            "",
            fmt_ratio(view.pct(50) / get_one.pct(50) if get_one.pct(50) else None),
        ),
        Row(
            "  partial answers (a section past its deadline)",
            f"{partial:,} ({100 * partial / answered:.1f} %)",
            ", ".join(f"{k}: {v}" for k, v in sorted(view.classes.items()) if k != "full")
            or "none",
        ),
        Row("  non-2xx / socket errors", f"{view.non_2xx} / {view.errors}", "0 / 0"),
        Row(
            "  service CPU per view (all processes) / of it the gRPC floor",
            f"{'n/a' if view_cpu_ms is None else f'{view_cpu_ms:.1f} ms'}",
            "3 calls x (server + caller) of the empty call: "
            f"{'n/a' if fanout_ms is None else f'{fanout_ms:.1f} ms'}",
            fmt_ratio(fanout_ms / view_cpu_ms if fanout_ms and view_cpu_ms else None),
        ),
    ]
    for name in SERVICES:
        cpu = cpus.get(name)
        peak = peaks[name]["peak_rss_mb"]
        rows.append(
            Row(
                f"{name} process: CPU during the view / peak RSS",
                f"{'n/a' if cpu is None else f'{cpu:.2f}'} cores / "
                f"{'n/a' if peak is None else f'{peak:.0f}'} MB",
                f"peak from {peaks[name]['source']}",
            )
        )
    rows.append(
        Row(
            f"check: view content of {min(CHECK_SAMPLE, cfg.customers)} customers (idle)",
            "ok" if not wrong else f"{len(wrong)} wrong",
            "contacts, open opportunities, open tickets, campaign touches, score as seeded; "
            "not partial",
        )
    )
    result.rows = rows
    for name, load in (("view360", view), ("GET customer", get_one), ("GET /healthz", healthz)):
        if load.non_2xx or load.errors:
            result.problems.append(
                f"{name}: {load.non_2xx} non-2xx answers {load.statuses}, {load.errors} errors"
            )
            result.problems += [f"  {s}" for s in load.samples]
    if capacity.non_2xx or capacity.socket_errors:
        result.problems.append(
            f"view360 capacity: {capacity.non_2xx} non-2xx answers {capacity.statuses}, "
            f"{capacity.socket_errors} socket errors"
        )
        result.problems += [f"  {s}" for s in capacity.samples]
    result.problems += wrong[:10]
    result.data = {
        "config": {
            "customers": cfg.customers,
            "contacts_per_customer": CONTACTS,
            "opportunities": opps,
            "tickets": tickets,
            "converted_leads": converted,
            "rate": cfg.rate,
            "seconds": cfg.seconds,
            "warmup_seconds": cfg.warmup,
            "limit_seconds": ctx.limit_seconds,
        },
        "servers": ctx.servers.describe(),
        "namespace": stack.namespace,
        "startup_seconds": round(startup, 2),
        "seed_seconds": round(seed_seconds, 2),
        "limits": {
            "healthz": healthz.to_json(),
            "get_customer": get_one.to_json(),
            "grpc_empty_call": {**grpc_floor.to_json(), "server_cpu_us_per_call": server_us},
            "view360_closed_loop_capacity": capacity.to_json(),
        },
        "view360": {
            **view.to_json(),
            "partial": partial,
            "partial_share": partial / answered,
        },
        "targets": {
            "p99_ms": {"target": TARGET_P99_MS, "measured": p99, "ratio": p99 / TARGET_P99_MS},
            "rate": {"target": TARGET_RATE, "measured": view.rate},
        },
        "cpu_per_view_ms": {"services": view_cpu_ms, "grpc_floor_of_fanout": fanout_ms},
        "ratios": {
            "p99_to_get_customer_p99": p99 / get_one.pct(99) if get_one.pct(99) else None,
            "p50_to_get_customer_p50": view.pct(50) / get_one.pct(50) if get_one.pct(50) else None,
        },
        "processes": {
            name: {"cpu_cores_during_view": cpus.get(name), **peaks[name]} for name in SERVICES
        },
        "content_check": {"sampled": min(CHECK_SAMPLE, cfg.customers), "wrong": wrong},
    }
    return result


SCENARIO = Scenario(
    name="customer_360",
    title="customer 360 view (local read + sales, service-desk and leads over gRPC)",
    run=run,
)
