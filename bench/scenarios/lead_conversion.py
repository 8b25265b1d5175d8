"""lead_conversion: issue 5's lead conversion saga end to end — ``POST
/v1/leads/{id}:convert`` on the leads service, then leads -> customers (match or create the
customer, create the contact) -> sales (create the opportunity) -> leads (lead marked
converted) over NATS JetStream, each step a transaction with its outbox event.

Setup (not timed): directory, leads, customers and sales migrated and started as separate
processes; a tenant (HQ -> region -> dealer) and a dealer rep through the directory's REST
API; the leads through ``POST /v1/leads:batchCreate`` (1,000 per call) as that rep, each with
a unique mobile, five leads per company name, all in one city, so customer matching (the
tenant's default keys: tax id, name + city, phone) finds the customer the first conversion of
each company created.

Measured, in this order:

1. limits: a bare JetStream hop (nats-py publish -> durable pull consumer, one at a time,
   then ``BENCH_CONVERSION_CLIENTS`` in flight) on the same server, and a single-row
   PostgreSQL transaction (an outbox row, the smallest write a saga step makes) by asyncpg,
   1 connection (latency) and ``BENCH_CONNECTIONS`` (rate), in ``crm_leads_<ns>_raw``;
2. latency: an open-loop generator process sending ``:convert`` with ``wait_seconds: 10`` at
   ``BENCH_CONVERSION_RATE`` (100/s) for ``BENCH_CONVERSION_SECONDS`` (20) after
   ``BENCH_WARMUP_SECONDS``; latency = due instant -> the 200 COMPLETED answer;
3. throughput: ``BENCH_CONVERSIONS`` (5,000) more conversions started (``wait_seconds: 0``)
   by ``BENCH_CONVERSION_CLIENTS`` (64) closed-loop clients in ``BENCH_LOAD_PROCS`` processes;
   the leads database is polled until every one has ended; rate = conversions ÷ (first
   request -> last conversion ended).

Issue 5's targets (≥ 300 conversions/s sustained; p50 ≤ 20 ms, p99 ≤ 80 ms at 100/s) are
printed next to the figures, never asserted. Checks (problems): every answer 2xx, no
conversion FAILED or still running, customers = distinct companies converted, opportunities
= contacts = leads converted = completed conversions."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.context import BenchContext, Scenario
from bench.load import percentile
from bench.natsfloor import NatsFloor, measure_jetstream_floor
from bench.paced import PacedResult, Request, Target, run_closed, run_paced
from bench.pgfloor import FloorResult, measure_tx_floor
from bench.procstats import CpuWindow, ProcessMonitor
from bench.report import Row, ScenarioResult, fmt_ms, fmt_rate, fmt_ratio, progress
from bench.stack import DealerUser, Stack, asyncpg_dsn, create_dealer_user

TARGET_RATE = 300.0
TARGET_P50_MS = 20.0
TARGET_P99_MS = 80.0
SERVICES = ("directory", "leads", "customers", "sales")
LEADS_PER_COMPANY = 5
BATCH = 1000
WAIT_SECONDS = 10.0
# Per conversion: 5 transactions (start; customers prepare; leads customer-prepared; sales
# create; leads opportunities-created) and 4 JetStream hops (2 commands, 2 replies).
SAGA_TX = 5
SAGA_HOPS = 4
COMPLETED, FAILED = 3, 5  # crm.leads.v1.ConversionState
RUNNING = (1, 2, 4)
LEAD_CONVERTED = 3  # crm.leads.v1.LeadStatus
OUTBOX_INSERT = (
    "INSERT INTO crm_outbox (id, event_type, data, headers) VALUES ($1, $2, $3, $4::jsonb)"
)
EVENT_DATA = bytes(400)
EVENT_HEADERS = json.dumps({"Crm-Event-Type": "crm.cmd.customers.prepare_conversion.v1"})


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def classify_conversion(status: int, body: bytes) -> str:
    """The conversion's state from a :convert answer (module level: worker processes)."""
    if not 200 <= status <= 299:
        return f"http {status}"
    try:
        state = str(json.loads(body).get("state", ""))
    except ValueError:
        return "unreadable"
    return state.removeprefix("CONVERSION_STATE_").lower() or "no state"


def _lead(i: int) -> dict[str, Any]:
    company = i // LEADS_PER_COMPANY
    return {
        "full_name": f"转化客户 {i}",
        "phone": f"+86139{i:08d}",
        "company": f"转化测试{company:05d}汽车销售有限公司",
        "province": "浙江",
        "city": "杭州",
        "source": "bench",
        "intent": {"product_interest": "EV-X"},
    }


def _convert_body(wait_seconds: float) -> bytes:
    return json.dumps(
        {
            "wait_seconds": wait_seconds,
            "contact": {"title": "采购经理"},
            "opportunity": {
                "title": "车队更新",
                "amount": {"currency_code": "CNY", "amount": "250000.00"},
                "product": "EV-X",
                "close_date": "2031-03-31",
            },
            "opportunity_per_intent": False,
        },
        ensure_ascii=False,
    ).encode()


async def _seed_leads(url: str, user: DealerUser, count: int) -> list[tuple[str, int]]:
    """``count`` leads through :batchCreate, 4 calls at a time: (lead id, index)."""
    sem = asyncio.Semaphore(4)

    async def batch(c: httpx.AsyncClient, first: int) -> list[tuple[str, int]]:
        indexes = list(range(first, min(first + BATCH, count)))
        async with sem:
            r = await c.post("/v1/leads:batchCreate", json={"leads": [_lead(i) for i in indexes]})
        if r.status_code != 200:
            raise RuntimeError(f"leads:batchCreate answered {r.status_code}: {r.text[:500]}")
        out: list[tuple[str, int]] = []
        for i, res in zip(indexes, r.json()["results"], strict=True):
            if res["outcome"] != "CREATED":
                raise RuntimeError(f"lead {i} not created: {json.dumps(res)[:500]}")
            out.append((str(res["lead"]["id"]), i))
        return out

    async with httpx.AsyncClient(base_url=url, headers=user.auth, timeout=120) as c:
        parts = await asyncio.gather(*(batch(c, f) for f in range(0, count, BATCH)))
    return [x for part in parts for x in part]


def _smoke(url: str, user: DealerUser, lead_id: str) -> None:
    """One conversion before measuring: a broken saga fails here with its answer."""
    r = httpx.post(
        f"{url}/v1/leads/{lead_id}:convert",
        content=_convert_body(WAIT_SECONDS),
        headers={**user.auth, "Content-Type": "application/json"},
        timeout=WAIT_SECONDS + 10,
    )
    state = classify_conversion(r.status_code, r.content)
    if r.status_code != 200 or state != "completed":
        raise RuntimeError(f"smoke :convert answered {r.status_code} ({state}): {r.text[:800]}")


@dataclass
class _Drain:
    ended: int
    failed: int
    running: int
    waited: float
    done_at: float | None  # time.monotonic when the last one ended (polled)


async def _states(conn: Any) -> dict[int, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM lead_conversions GROUP BY state")
    return {int(r["state"]): int(r["n"]) for r in rows}


async def _wait_ended(dsn: str, expected: int, within: float) -> _Drain:
    """Poll the leads database until ``expected`` conversions have ended (or ``within``)."""
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        while True:
            states = await _states(conn)
            ended = states.get(COMPLETED, 0) + states.get(FAILED, 0)
            now = time.monotonic()
            if ended >= expected:
                return _Drain(ended, states.get(FAILED, 0), 0, now - started, now)
            if now - started > within:
                running = sum(states.get(s, 0) for s in RUNNING)
                return _Drain(ended, states.get(FAILED, 0), running, now - started, None)
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _db_latencies(dsn: str, lead_ids: list[str]) -> list[float]:
    """update_time - create_time (ms) of the given leads' completed conversions: the
    database's view of each conversion's duration under the burst."""
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM update_time - create_time) * 1000 AS ms "
            "FROM lead_conversions WHERE state = $1 AND lead_id = ANY($2::uuid[])",
            COMPLETED,
            [uuid.UUID(x) for x in lead_ids],
        )
    finally:
        await conn.close()
    return sorted(float(r["ms"]) for r in rows)


STAGES = (
    ("leads start -> customers step", 0, 1),
    ("customers step -> sales step", 1, 2),
    ("sales step -> lead converted", 2, 3),
)


async def _stages(stack: Stack, lead_ids: list[str]) -> dict[str, list[float]]:
    """Where a conversion's time goes, from the transactions' own timestamps (one server
    clock): leads ``create_time`` (start), customers ``conversion_records.create_time``
    (prepare), sales ``opportunities.create_time`` (create), leads ``update_time`` (end).
    Each gap is a JetStream hop or two plus the transactions between them."""
    import asyncpg

    async def fetch(service: str, sql: str, *args: Any) -> list[Any]:
        conn: Any = await asyncpg.connect(asyncpg_dsn(stack.db_url(service)))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    ids = [uuid.UUID(x) for x in lead_ids]
    rows = await fetch(
        "leads",
        "SELECT id, create_time, update_time FROM lead_conversions "
        "WHERE state = $1 AND lead_id = ANY($2::uuid[])",
        COMPLETED,
        ids,
    )
    conv = {r["id"]: [r["create_time"], None, None, r["update_time"]] for r in rows}
    for r in await fetch("customers", "SELECT conversion_id, create_time FROM conversion_records"):
        if r["conversion_id"] in conv:
            conv[r["conversion_id"]][1] = r["create_time"]
    for r in await fetch(
        "sales",
        "SELECT conversion_id, min(create_time) AS t FROM opportunities "
        "WHERE conversion_id IS NOT NULL GROUP BY conversion_id",
    ):
        if r["conversion_id"] in conv:
            conv[r["conversion_id"]][2] = r["t"]
    out: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for times in conv.values():
        for name, a, b in STAGES:
            if times[a] is not None and times[b] is not None:
                out[name].append((times[b] - times[a]).total_seconds() * 1000)
    for values in out.values():
        values.sort()
    return out


METRIC = re.compile(
    r'^crm_event_handling_seconds_(sum|count)\{[^}]*consumer="([^"]+)"[^}]*\} ([0-9.eE+-]+)$'
)
OUTCOME = re.compile(
    r'^crm_events_consumed_total\{[^}]*consumer="([^"]+)"[^}]*outcome="([^"]+)"[^}]*\} '
    r"([0-9.eE+-]+)$"
)


def _consumer_metrics(stack: Stack) -> dict[str, dict[str, float]]:
    """Per saga consumer, from each service's /metrics: events handled, mean handling time
    (its transaction included) and outcomes other than ack. Consumers handle the messages of
    a fetch one after another, so 1 ÷ mean handling time bounds a step's rate."""
    out: dict[str, dict[str, float]] = {}
    for name in ("leads", "customers", "sales"):
        text = httpx.get(f"{stack.processes[name].url}/metrics", timeout=10).text
        for line in text.splitlines():
            m = METRIC.match(line)
            if m and "conversion" in m.group(2):
                entry = out.setdefault(f"{name}/{m.group(2)}", {})
                entry[m.group(1)] = entry.get(m.group(1), 0.0) + float(m.group(3))
            o = OUTCOME.match(line)
            if o and "conversion" in o.group(1) and o.group(2) != "ack":
                entry = out.setdefault(f"{name}/{o.group(1)}", {})
                entry[o.group(2)] = entry.get(o.group(2), 0.0) + float(o.group(3))
    return out


@dataclass
class _Checks:
    states: dict[int, int]
    leads_converted: int
    customers: int
    contacts: int
    opportunities: int


async def _checks(stack: Stack) -> _Checks:
    import asyncpg

    async def one(service: str, sql: str) -> int:
        conn: Any = await asyncpg.connect(asyncpg_dsn(stack.db_url(service)))
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    conn: Any = await asyncpg.connect(asyncpg_dsn(stack.db_url("leads")))
    try:
        states = await _states(conn)
        converted = int(
            await conn.fetchval("SELECT count(*) FROM leads WHERE status = $1", LEAD_CONVERTED)
        )
    finally:
        await conn.close()
    return _Checks(
        states=states,
        leads_converted=converted,
        customers=await one("customers", "SELECT count(*) FROM customers"),
        contacts=await one("customers", "SELECT count(*) FROM contacts"),
        opportunities=await one("sales", "SELECT count(*) FROM opportunities"),
    )


def _raw_tx() -> Any:
    from crm_platform.ids import new_id

    async def body(conn: Any, worker: int, n: int) -> None:
        await conn.execute(
            OUTBOX_INSERT,
            new_id(),
            "crm.cmd.customers.prepare_conversion.v1",
            EVENT_DATA,
            EVENT_HEADERS,
        )

    return body


def run(ctx: BenchContext) -> ScenarioResult:
    stack = Stack(ctx.servers)
    try:
        return _run(ctx, stack)
    finally:
        stack.close()


@dataclass
class _Config:
    rate: float
    seconds: float
    warmup: float
    conversions: int
    clients: int
    procs: int

    @classmethod
    def from_env(cls, ctx: BenchContext) -> _Config:
        return cls(
            rate=_env_float("BENCH_CONVERSION_RATE", 100.0),
            seconds=_env_float("BENCH_CONVERSION_SECONDS", 20.0),
            warmup=ctx.load.warmup,
            conversions=_env_int("BENCH_CONVERSIONS", 5000),
            clients=_env_int("BENCH_CONVERSION_CLIENTS", 64),
            procs=ctx.load.python_procs,
        )

    @property
    def paced_count(self) -> int:
        return max(1, round(self.rate * (self.warmup + self.seconds)))


def _run(ctx: BenchContext, stack: Stack) -> ScenarioResult:
    cfg = _Config.from_env(ctx)

    async def migrate() -> str:
        for service in SERVICES:
            await stack.migrate(service)
        return await stack.migrate("leads", "_raw")

    t0 = time.monotonic()
    progress("  migrating, starting directory + leads + customers + sales processes")
    raw_url = asyncio.run(migrate())
    for service in SERVICES:
        stack.spawn(service)
    stack.wait_ready(*SERVICES)
    startup = time.monotonic() - t0
    leads = stack.processes["leads"]
    user = asyncio.run(create_dealer_user(stack.processes["directory"].url, stack.bootstrap_token))
    total = 1 + cfg.paced_count + cfg.conversions
    progress(f"  seeding {total:,} leads through :batchCreate")
    t1 = time.monotonic()
    seeded = asyncio.run(_seed_leads(leads.url, user, total))
    seed_seconds = time.monotonic() - t1
    _smoke(leads.url, user, seeded[0][0])
    paced_leads = seeded[1 : 1 + cfg.paced_count]
    burst_leads = seeded[1 + cfg.paced_count :]
    random.Random(5).shuffle(burst_leads)  # companies interleaved, as in real traffic

    monitors = {name: ProcessMonitor(sp.pid) for name, sp in stack.processes.items()}
    for m in monitors.values():
        m.__enter__()
    try:
        progress(
            f"  limits: JetStream hop, PostgreSQL single-row tx ({ctx.limit_seconds:g} s each)"
        )
        nats_floor = measure_jetstream_floor(
            ctx.servers.nats_url, stack.namespace, seconds=ctx.limit_seconds, in_flight=cfg.clients
        )
        raw_dsn = asyncpg_dsn(raw_url)
        tx_one = measure_tx_floor(raw_dsn, _raw_tx(), connections=1, seconds=ctx.limit_seconds)
        tx_many = measure_tx_floor(
            raw_dsn, _raw_tx(), connections=ctx.load.connections, seconds=ctx.limit_seconds
        )
        headers = {**user.auth, "Content-Type": "application/json"}
        target = Target(leads.url, headers, classify_conversion, timeout=WAIT_SECONDS + 50)
        progress(
            f"  latency: {cfg.rate:g} conversions/s paced, wait_seconds {WAIT_SECONDS:g} "
            f"({cfg.warmup:g} s warm-up + {cfg.seconds:g} s)"
        )
        body = _convert_body(WAIT_SECONDS)
        paced = run_paced(
            target,
            [Request("POST", f"/v1/leads/{lead_id}:convert", body) for lead_id, _ in paced_leads],
            rate=cfg.rate,
            seconds=cfg.seconds,
            warmup=cfg.warmup,
            # Open loop: enough connections for every request that could still be waiting.
            max_connections=max(512, round(cfg.rate * (WAIT_SECONDS + 5))),
        )
        leads_dsn = asyncpg_dsn(stack.db_url("leads"))
        before = asyncio.run(_wait_ended(leads_dsn, 1 + cfg.paced_count, 300))
        progress(
            f"  throughput: {cfg.conversions:,} conversions, {cfg.clients} clients, "
            "wait_seconds 0, until all have ended"
        )
        body0 = _convert_body(0)
        cpus = {name: CpuWindow(sp.pid) for name, sp in stack.processes.items()}
        for c in cpus.values():
            c.__enter__()
        burst = run_closed(
            target,
            [Request("POST", f"/v1/leads/{lead_id}:convert", body0) for lead_id, _ in burst_leads],
            connections=cfg.clients,
            procs=cfg.procs,
        )
        drain = asyncio.run(_wait_ended(leads_dsn, len(seeded), max(120.0, cfg.conversions / 20)))
        for c in cpus.values():
            c.__exit__(None, None, None)
        db_lat = asyncio.run(_db_latencies(leads_dsn, [x for x, _ in burst_leads]))
        checks = asyncio.run(_checks(stack))
        consumers = _consumer_metrics(stack)
        stages = {
            "paced": asyncio.run(_stages(stack, [x for x, _ in paced_leads])),
            "burst": asyncio.run(_stages(stack, [x for x, _ in burst_leads])),
        }
    finally:
        for m in monitors.values():
            m.__exit__(None, None, None)
    companies = len({i // LEADS_PER_COMPANY for _, i in seeded})
    return _result(
        ctx=ctx,
        stack=stack,
        cfg=cfg,
        startup=startup,
        seed_seconds=seed_seconds,
        seeded=len(seeded),
        companies=companies,
        nats_floor=nats_floor,
        tx_one=tx_one,
        tx_many=tx_many,
        paced=paced,
        burst=burst,
        drain=drain,
        settle=before,
        db_lat=db_lat,
        checks=checks,
        stages=stages,
        consumers=consumers,
        cpus={name: c.utilisation for name, c in cpus.items()},
        peaks={name: m.peak() for name, m in monitors.items()},
    )


def _meets(ratio: float, higher_is_better: bool) -> str:
    ok = ratio >= 1 if higher_is_better else ratio <= 1
    word = ("meets" if ok else "below") if higher_is_better else ("meets" if ok else "above")
    return f"{fmt_ratio(ratio)} of target ({word})"


def _result(
    *,
    ctx: BenchContext,
    stack: Stack,
    cfg: _Config,
    startup: float,
    seed_seconds: float,
    seeded: int,
    companies: int,
    nats_floor: NatsFloor,
    tx_one: FloorResult,
    tx_many: FloorResult,
    paced: PacedResult,
    burst: PacedResult,
    drain: _Drain,
    settle: _Drain,
    db_lat: list[float],
    checks: _Checks,
    stages: dict[str, dict[str, list[float]]],
    consumers: dict[str, dict[str, float]],
    cpus: dict[str, float | None],
    peaks: dict[str, dict[str, Any]],
) -> ScenarioResult:
    title = "lead conversion saga end to end (leads -> customers -> sales -> leads)"
    result = ScenarioResult(name="lead_conversion", title=title)
    completed_paced = paced.classes.get("completed", 0)
    p50, p90, p99 = paced.pct(50), paced.pct(90), paced.pct(99)
    burst_seconds = (drain.done_at - burst.first_send) if drain.done_at is not None else None
    burst_rate = cfg.conversions / burst_seconds if burst_seconds else 0.0
    start_seconds = burst.last_answer - burst.first_send
    # Composed floors: what the bus and the database alone allow one conversion.
    floor_latency = SAGA_HOPS * nats_floor.rtt_p50_ms + SAGA_TX * tx_one.p50_ms
    floor_rate = min(nats_floor.rate / SAGA_HOPS, tx_many.tps / SAGA_TX)
    load1, _, _ = os.getloadavg()
    result.notes = [
        f"latency: open loop {cfg.rate:g}/s, {cfg.seconds:g} s after {cfg.warmup:g} s "
        f"warm-up, wait_seconds {WAIT_SECONDS:g}, latency from each request's due instant; "
        f"throughput: {cfg.conversions:,} conversions, {cfg.clients} closed-loop clients in "
        f"{min(cfg.procs, cfg.clients)} processes, wait_seconds 0",
        f"setup: {seeded:,} leads ({companies:,} companies, {LEADS_PER_COMPANY} leads each, "
        f"one city) by :batchCreate in {seed_seconds:.1f} s; services up in {startup:.1f} s",
        f"servers: {ctx.servers.describe()['postgres']} | {ctx.servers.nats_url}; "
        f"namespace {stack.namespace}",
        f"machine: {os.cpu_count()} CPUs, load average now {load1:.2f} "
        "(other work on the machine skews every figure)",
        f"composed floor: {SAGA_HOPS} JetStream hops + {SAGA_TX} single-row transactions per "
        "conversion (latency from the 1-connection tx p50 and the hop p50; rate the lower of "
        f"JetStream msgs/s ÷ {SAGA_HOPS} and tx/s ÷ {SAGA_TX})",
    ]
    rows = [
        Row(
            "limit: JetStream hop (publish -> pull consumer), 1 at a time",
            f"p50 {fmt_ms(nats_floor.rtt_p50_ms)}",
            f"p99 {fmt_ms(nats_floor.rtt_p99_ms)} ({nats_floor.rtt_samples:,} msgs)",
        ),
        Row(
            f"limit: JetStream publish + fetch/ack, {nats_floor.in_flight} in flight",
            fmt_rate(nats_floor.rate, "msgs/s"),
        ),
        Row(
            "limit: PostgreSQL single-row tx (asyncpg), 1 conn",
            fmt_rate(tx_one.tps, "tx/s"),
            f"p50 {fmt_ms(tx_one.p50_ms)}, p99 {fmt_ms(tx_one.p99_ms)}",
        ),
        Row(
            f"limit: PostgreSQL single-row tx (asyncpg), {tx_many.connections} conns",
            fmt_rate(tx_many.tps, "tx/s"),
            f"p50 {fmt_ms(tx_many.p50_ms)}, p99 {fmt_ms(tx_many.p99_ms)}",
        ),
        Row(
            "composed floor per conversion",
            f"{fmt_ms(floor_latency)}",
            f"≤ {fmt_rate(floor_rate, 'conversions/s')}",
        ),
        Row(
            f"latency: :convert at {cfg.rate:g}/s -> 200 COMPLETED",
            f"{paced.rate:,.1f} req/s sent",
            f"{paced.sent:,} counted, max send lateness {fmt_ms(paced.max_lateness_ms)}",
        ),
        Row(
            "  latency p50",
            fmt_ms(p50),
            f"target ≤ {TARGET_P50_MS:g} ms; floor {fmt_ms(floor_latency)}",
            _meets(p50 / TARGET_P50_MS, False),
        ),
        Row("  latency p90", fmt_ms(p90)),
        Row(
            "  latency p99",
            fmt_ms(p99),
            f"target ≤ {TARGET_P99_MS:g} ms",
            _meets(p99 / TARGET_P99_MS, False),
        ),
        Row(
            "  latency max",
            fmt_ms(paced.max_ms),
            f"all ended {settle.waited:.1f} s after the last answer",
        ),
        Row(
            "  p50 ÷ composed floor",
            "",
            "",
            fmt_ratio(p50 / floor_latency if floor_latency else None),
        ),
        Row(
            f"  completed / failed / still running at {WAIT_SECONDS:g} s (202) / errors",
            f"{completed_paced:,} / {paced.classes.get('failed', 0)} / "
            f"{paced.sent - paced.errors - completed_paced - paced.classes.get('failed', 0)} / "
            f"{paced.errors}",
            f"{paced.sent:,} / 0 / 0 / 0",
        ),
        Row(
            f"throughput: {cfg.conversions:,} conversions, first request -> last ended",
            fmt_rate(burst_rate, "conversions/s"),
            f"target ≥ {TARGET_RATE:g}/s",
            _meets(burst_rate / TARGET_RATE, True),
        ),
        Row(
            "  ÷ composed floor",
            "",
            f"{fmt_rate(floor_rate, 'conversions/s')}",
            fmt_ratio(burst_rate / floor_rate if floor_rate else None),
        ),
        Row(
            "  all ended after",
            "n/a" if burst_seconds is None else f"{burst_seconds:.2f} s",
            f"starts took {start_seconds:.2f} s ({burst.rate:,.0f} req/s)",
        ),
        Row(
            "  :convert answer (started) p50 / p99",
            f"{fmt_ms(burst.pct(50))} / {fmt_ms(burst.pct(99))}",
            f"statuses {dict(sorted(burst.statuses.items()))}",
        ),
        Row(
            "  conversion duration in the DB p50 / p99",
            f"{fmt_ms(percentile(db_lat, 50))} / {fmt_ms(percentile(db_lat, 99))}",
            "update_time - create_time, under the burst",
        ),
        Row(
            "  failed conversions / non-2xx / errors",
            f"{drain.failed} / {burst.non_2xx} / {burst.errors}",
            "0 / 0 / 0",
        ),
    ]
    rows.append(
        Row("where the time goes (DB timestamps), p50 / p99", "", "latency phase | throughput")
    )
    for name, _, _ in STAGES:
        a, b = stages["paced"][name], stages["burst"][name]
        rows.append(
            Row(
                f"  {name}",
                f"{fmt_ms(percentile(a, 50))} / {fmt_ms(percentile(a, 99))}",
                f"{fmt_ms(percentile(b, 50))} / {fmt_ms(percentile(b, 99))}",
            )
        )
    rows.append(Row("saga consumers (whole run): events, mean handling", "", "other outcomes"))
    for name, m in sorted(consumers.items()):
        count = m.get("count", 0.0)
        mean = 1000 * m.get("sum", 0.0) / count if count else 0.0
        other = {k: int(v) for k, v in m.items() if k not in ("sum", "count") and v}
        rows.append(
            Row(
                f"  {name}",
                f"{count:,.0f} x {fmt_ms(mean)}",
                ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "none",
                f"≤ {1000 / mean:,.0f}/s one at a time" if mean else "",
            )
        )
    for name in SERVICES:
        cpu = cpus.get(name)
        peak = peaks[name]["peak_rss_mb"]
        rows.append(
            Row(
                f"{name} process: CPU during throughput / peak RSS",
                f"{'n/a' if cpu is None else f'{cpu:.2f}'} cores / "
                f"{'n/a' if peak is None else f'{peak:.0f}'} MB",
                f"peak from {peaks[name]['source']}",
            )
        )
    states = checks.states
    completed = states.get(COMPLETED, 0)
    running = sum(states.get(s, 0) for s in RUNNING)
    rows += [
        Row(
            "check: conversions completed / failed / running",
            f"{completed:,} / {states.get(FAILED, 0)} / {running}",
            f"{seeded:,} / 0 / 0",
        ),
        Row("check: customers (distinct companies)", f"{checks.customers:,}", f"{companies:,}"),
        Row(
            "check: opportunities / contacts / leads converted",
            f"{checks.opportunities:,} / {checks.contacts:,} / {checks.leads_converted:,}",
            f"{completed:,} each",
        ),
    ]
    result.rows = rows

    result.problems += _problems(
        paced=paced,
        burst=burst,
        drain=drain,
        checks=checks,
        seeded=seeded,
        companies=companies,
        floors=(tx_one, tx_many),
    )
    result.data = {
        "config": {
            "rate": cfg.rate,
            "seconds": cfg.seconds,
            "warmup_seconds": cfg.warmup,
            "wait_seconds": WAIT_SECONDS,
            "conversions": cfg.conversions,
            "clients": cfg.clients,
            "load_procs": cfg.procs,
            "limit_seconds": ctx.limit_seconds,
            "leads_per_company": LEADS_PER_COMPANY,
        },
        "servers": ctx.servers.describe(),
        "namespace": stack.namespace,
        "startup_seconds": round(startup, 2),
        "seed": {"leads": seeded, "companies": companies, "seconds": round(seed_seconds, 2)},
        "limits": {
            "jetstream": nats_floor.to_json(),
            "pg_single_row_tx_1_conn": tx_one.to_json(),
            "pg_single_row_tx_n_conns": tx_many.to_json(),
            "composed_floor": {
                "hops": SAGA_HOPS,
                "transactions": SAGA_TX,
                "latency_ms": round(floor_latency, 3),
                "conversions_per_s": round(floor_rate, 1),
            },
        },
        "latency_phase": {
            **paced.to_json(),
            "backlog_seconds_after_last_answer": round(settle.waited, 3),
        },
        "throughput_phase": {
            "starts": burst.to_json(),
            "seconds_to_all_ended": burst_seconds,
            "conversions_per_s": round(burst_rate, 1),
            "failed": drain.failed,
            "db_duration_ms": {
                "p50": round(percentile(db_lat, 50), 3),
                "p99": round(percentile(db_lat, 99), 3),
                "max": round(db_lat[-1], 3) if db_lat else None,
            },
        },
        "targets": {
            "conversions_per_s": {
                "target": TARGET_RATE,
                "measured": burst_rate,
                "ratio": burst_rate / TARGET_RATE,
            },
            "p50_ms": {"target": TARGET_P50_MS, "measured": p50, "ratio": p50 / TARGET_P50_MS},
            "p99_ms": {"target": TARGET_P99_MS, "measured": p99, "ratio": p99 / TARGET_P99_MS},
        },
        "ratios": {
            "p50_to_composed_floor": p50 / floor_latency if floor_latency else None,
            "rate_to_composed_floor": burst_rate / floor_rate if floor_rate else None,
        },
        "processes": {
            name: {"cpu_cores_during_throughput": cpus.get(name), **peaks[name]}
            for name in SERVICES
        },
        "stages_ms": {
            phase: {
                name: {"p50": round(percentile(v, 50), 3), "p99": round(percentile(v, 99), 3)}
                for name, v in by_stage.items()
            }
            for phase, by_stage in stages.items()
        },
        "consumers": consumers,
        "checks": {
            "states": {str(k): v for k, v in sorted(states.items())},
            "customers": checks.customers,
            "companies": companies,
            "contacts": checks.contacts,
            "opportunities": checks.opportunities,
            "leads_converted": checks.leads_converted,
        },
    }
    return result


def _problems(
    *,
    paced: PacedResult,
    burst: PacedResult,
    drain: _Drain,
    checks: _Checks,
    seeded: int,
    companies: int,
    floors: tuple[FloorResult, FloorResult],
) -> list[str]:
    """Why the figures are not valid (empty when they are)."""
    problems: list[str] = []
    tx_one, tx_many = floors
    for name, load in (("latency phase", paced), ("throughput phase", burst)):
        if load.non_2xx or load.errors:
            problems.append(
                f"{name}: {load.non_2xx} non-2xx answers {load.statuses}, {load.errors} errors"
            )
            problems += [f"  {s}" for s in load.samples]
    # A conversion still running when wait_seconds ran out (202) is a latency beyond it,
    # reported; only a FAILED one (or no answer) makes the figures invalid.
    if paced.classes.get("failed", 0):
        problems.append(f"latency phase: answers by state {paced.classes} (none may fail)")
    if drain.done_at is None:
        problems.append(
            f"throughput phase: {drain.running} conversions still running {drain.waited:.0f} s "
            "after the last start"
        )
    for floor_name, floor in (("1 conn", tx_one), ("n conns", tx_many)):
        if floor.errors:
            problems.append(
                f"raw tx floor ({floor_name}): {floor.errors} failed, {floor.first_error}"
            )
    return problems + _check_problems(checks, seeded, companies)


def _check_problems(checks: _Checks, seeded: int, companies: int) -> list[str]:
    problems: list[str] = []
    states = checks.states
    completed = states.get(COMPLETED, 0)
    running = sum(states.get(s, 0) for s in RUNNING)
    if states.get(FAILED, 0):
        problems.append(f"{states[FAILED]} conversions FAILED (see the services' logs)")
    if running:
        problems.append(f"{running} conversions stuck in a running state")
    if completed != seeded:
        problems.append(f"{completed} conversions completed, {seeded} leads were converted")
    if checks.customers != companies:
        problems.append(
            f"{checks.customers} customers for {companies} distinct companies: matching "
            "created duplicates or missed"
        )
    if not checks.opportunities == checks.contacts == checks.leads_converted == completed:
        problems.append(
            f"opportunities {checks.opportunities}, contacts {checks.contacts}, leads converted "
            f"{checks.leads_converted}: each must equal the {completed} completed conversions"
        )
    return problems


SCENARIO = Scenario(
    name="lead_conversion",
    title="lead conversion saga end to end (leads -> customers -> sales -> leads)",
    run=run,
)
