"""lead_create: single-lead REST create (validated, persisted with its outbox event).

Measured in one run, on the same machine and servers:

1. raw floor: asyncpg issuing the create's transaction shape (INSERT the lead RETURNING
   it + INSERT its outbox row, one transaction) from the same number of connections into a
   database migrated like the service's (``crm_leads_<ns>_raw``: same tables and indexes;
   no relay reads it);
2. HTTP ceiling: ``GET /healthz`` of the leads process (FastAPI + uvicorn + the platform's
   middleware, no I/O) under the same load generator;
3. the path itself: ``POST /v1/leads`` with a unique body per request, as a dealer rep.

Issue 3's targets (≥ 1,500 req/s per process, p99 ≤ 25 ms at 8 clients) are printed next
to the figures, never asserted."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import BenchContext, Scenario
from bench.load import BodyTemplate, LoadOptions, LoadResult, LoadSpec, describe_generator, run_load
from bench.pgfloor import FloorResult, measure_tx_floor
from bench.procstats import MB, CpuWindow, ProcessMonitor, rss_bytes
from bench.profile import pyspy_record
from bench.report import Row, ScenarioResult, fmt_ms, fmt_rate, fmt_ratio, progress
from bench.stack import DealerUser, Stack, asyncpg_dsn, create_dealer_user

TARGET_RPS = 1500.0
TARGET_P99_MS = 25.0
OUTBOX_DRAIN_WAIT = 5.0

# A CN mobile (138 + 8 digits) and an email unique per request, so later dedup rules see
# distinct leads; Chinese text like real dealer input.
BODY_TEMPLATE = json.dumps(
    {
        "full_name": "Bench Lead {{w}}-{{n}}",
        "phone": "13{{p}}{{d8}}",
        "email": "lead-{{run}}-{{w}}-{{n}}@bench.example.com",
        "company": "Bench Motors",
        "province": "浙江",
        "city": "杭州",
        "source": "bench",
    },
    ensure_ascii=False,
)

# The same statements a capture runs: claim two dedup keys, insert the lead, its first
# intent and its outbox event.
KEY_INSERT = (
    "INSERT INTO lead_keys (tenant_id, kind, value, lead_id) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT DO NOTHING RETURNING lead_id"
)
LEAD_INSERT = """
INSERT INTO leads (id, tenant_id, owner_org_id, owner_org_path, full_name, phone, email,
                   company, province, city, source, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING *
"""
INTENT_INSERT = (
    "INSERT INTO lead_intents (id, tenant_id, lead_id, source, request_id, created_lead) "
    "VALUES ($1, $2, $3, $4, NULL, true) "
    "ON CONFLICT (tenant_id, request_id) WHERE request_id IS NOT NULL DO NOTHING "
    "RETURNING id, occur_time"
)
OUTBOX_INSERT = (
    "INSERT INTO crm_outbox (id, event_type, data, headers) VALUES ($1, $2, $3, $4::jsonb)"
)
EVENT_DATA = bytes(range(256)) + bytes(150)  # about the size of a LeadCreated envelope
EVENT_HEADERS = json.dumps(
    {
        "Crm-Event-Type": "crm.leads.lead.created.v1",
        "Content-Type": "application/protobuf",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
)


def _raw_tx(tenant_id: str, org_id: str, org_path: str) -> Any:
    import uuid

    from crm_platform.ids import new_id

    tenant, org = uuid.UUID(tenant_id), uuid.UUID(org_id)

    async def body(conn: Any, worker: int, n: int) -> None:
        lead_id = new_id()
        phone = f"+86138{worker % 10}{n % 10_000_000:07d}"
        email = f"raw-{worker}-{n}@bench.example.com"
        await conn.fetchrow(KEY_INSERT, tenant, "email", email, lead_id)
        await conn.fetchrow(KEY_INSERT, tenant, "phone", phone, lead_id)
        await conn.fetchrow(
            LEAD_INSERT,
            lead_id,
            tenant,
            org,
            org_path,
            f"Raw Lead {worker}-{n}",
            phone,
            email,
            "Bench Motors",
            "浙江",
            "杭州",
            "bench",
            1,
        )
        await conn.fetchrow(INTENT_INSERT, new_id(), tenant, lead_id, "bench")
        await conn.execute(
            OUTBOX_INSERT, new_id(), "crm.leads.lead.created.v1", EVENT_DATA, EVENT_HEADERS
        )

    return body


def _group_totals(url: str) -> tuple[float, float]:
    """(captures, groups) written by the lead-capture group commit so far, from /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("group") != "lead-capture":
                continue
            if sample.name == "crm_group_commit_writes_total":
                total = sample.value
            elif sample.name == "crm_group_commit_transactions_total":
                count = sample.value
    return total, count


@dataclass
class _Db:
    leads: int
    outbox: int
    pending: int


async def _db_counts(dsn: str) -> _Db:
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    try:
        leads = await conn.fetchval("SELECT count(*) FROM leads")
        outbox = await conn.fetchval("SELECT count(*) FROM crm_outbox")
        pending = await conn.fetchval("SELECT count(*) FROM crm_outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    return _Db(int(leads), int(outbox), int(pending))


def _wait_outbox_drained(dsn: str, within: float) -> tuple[_Db, float | None]:
    started = time.monotonic()
    while True:
        counts = asyncio.run(_db_counts(dsn))
        elapsed = time.monotonic() - started
        if counts.pending == 0:
            return counts, elapsed
        if elapsed > within:
            return counts, None
        time.sleep(0.2)


def _smoke(url: str, user: DealerUser) -> None:
    """One create before measuring: a broken path fails here with its answer."""
    import httpx

    r = httpx.post(
        f"{url}/v1/leads",
        content=BodyTemplate(BODY_TEMPLATE, "smoke", 9).next(),
        headers={**user.auth, "Content-Type": "application/json"},
        timeout=10,
    )
    if r.status_code != 201:
        raise RuntimeError(f"smoke POST /v1/leads answered {r.status_code}: {r.text[:500]}")


def run(ctx: BenchContext) -> ScenarioResult:
    stack = Stack(ctx.servers)
    try:
        return _run(ctx, stack)
    finally:
        stack.close()


def _run(ctx: BenchContext, stack: Stack) -> ScenarioResult:
    async def migrate() -> str:
        await stack.migrate("directory")
        await stack.migrate("leads")
        return await stack.migrate("leads", "_raw")

    t0 = time.monotonic()
    progress("  migrating, starting directory + leads processes")
    raw_url = asyncio.run(migrate())
    stack.spawn("directory")
    leads = stack.spawn("leads")
    stack.wait_ready("directory", "leads")
    startup = time.monotonic() - t0
    user = asyncio.run(create_dealer_user(stack.processes["directory"].url, stack.bootstrap_token))
    _smoke(leads.url, user)
    limits = LoadOptions(
        connections=ctx.load.connections,
        seconds=ctx.limit_seconds,
        warmup=min(1.0, ctx.load.warmup),
        generator=ctx.load.generator,
        wrk_threads=ctx.load.wrk_threads,
        python_procs=ctx.load.python_procs,
    )
    with ProcessMonitor(leads.pid) as monitor:
        rss_ready = rss_bytes(leads.pid)
        progress(f"  raw asyncpg floor ({ctx.limit_seconds:g} s)")
        floor = measure_tx_floor(
            asyncpg_dsn(raw_url),
            _raw_tx(user.tenant_id, user.dealer_id, user.dealer_path),
            connections=ctx.load.connections,
            seconds=ctx.limit_seconds,
        )
        progress(f"  HTTP ceiling: GET /healthz ({ctx.limit_seconds:g} s)")
        ceiling = run_load(LoadSpec(url=f"{leads.url}/healthz"), limits)
        spec = LoadSpec(
            url=f"{leads.url}/v1/leads",
            method="POST",
            headers={**user.auth, "Content-Type": "application/json"},
            body_template=BODY_TEMPLATE,
            run_tag=stack.namespace,
        )
        progress(f"  POST /v1/leads ({ctx.load.warmup:g} s warm-up + {ctx.load.seconds:g} s)")
        with (
            CpuWindow(leads.pid) as cpu,
            pyspy_record(
                leads.pid,
                ctx.load.warmup + ctx.load.seconds,
                ctx.out_dir,
                "lead_create-leads-profile",
            ) as flamegraph,
        ):
            groups_before = _group_totals(leads.url)
            create = run_load(spec, ctx.load)
            groups_after = _group_totals(leads.url)
        at_end = asyncio.run(_db_counts(asyncpg_dsn(stack.db_url("leads"))))
        drained, drain_seconds = _wait_outbox_drained(
            asyncpg_dsn(stack.db_url("leads")), OUTBOX_DRAIN_WAIT
        )
        peak = monitor.peak()
    return _result(
        ctx=ctx,
        stack=stack,
        startup=startup,
        floor=floor,
        ceiling=ceiling,
        create=create,
        cpu=cpu.utilisation,
        rss_ready=rss_ready,
        peak=peak,
        at_end=at_end,
        drained=drained,
        drain_seconds=drain_seconds,
        flamegraph=flamegraph,
        groups=(groups_after[0] - groups_before[0], groups_after[1] - groups_before[1]),
    )


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _result(
    *,
    ctx: BenchContext,
    stack: Stack,
    startup: float,
    floor: FloorResult,
    ceiling: LoadResult,
    create: LoadResult,
    cpu: float | None,
    rss_ready: int | None,
    peak: dict[str, Any],
    at_end: _Db,
    drained: _Db,
    drain_seconds: float | None,
    flamegraph: Path | None,
    groups: tuple[float, float],
) -> ScenarioResult:
    vs_floor = _ratio(create.rps, floor.tps)
    vs_ceiling = _ratio(create.rps, ceiling.rps)
    vs_rps_target = create.rps / TARGET_RPS
    vs_p99_target = create.p99_ms / TARGET_P99_MS
    conns = ctx.load.connections
    result = ScenarioResult(
        name="lead_create",
        title="single-lead REST create (validated, persisted with its outbox event)",
    )
    load1, _, _ = os.getloadavg()
    result.notes = [
        f"load: {describe_generator(ctx.load)}, {ctx.load.seconds:g} s after "
        f"{ctx.load.warmup:g} s warm-up; limits measured {ctx.limit_seconds:g} s each",
        f"servers: {ctx.servers.describe()['postgres']} | {ctx.servers.nats_url}; "
        f"namespace {stack.namespace}; services up in {startup:.1f} s",
        f"machine: {os.cpu_count()} CPUs, load average now {load1:.2f} "
        "(other work on the machine skews every figure)",
    ]
    if flamegraph is not None:
        result.notes.append(f"py-spy flame graph of the leads process: {flamegraph}")
    peak_mb = peak["peak_rss_mb"]
    result.rows = [
        Row(
            f"raw asyncpg floor: capture tx (keys, lead, intent, outbox), {conns} conns",
            fmt_rate(floor.tps, "tx/s"),
            f"p50 {fmt_ms(floor.p50_ms)}, p99 {fmt_ms(floor.p99_ms)}",
        ),
        Row(
            f"HTTP ceiling: GET /healthz, {conns} conns",
            fmt_rate(ceiling.rps, "req/s"),
            f"p50 {fmt_ms(ceiling.p50_ms)}, p99 {fmt_ms(ceiling.p99_ms)}",
        ),
        Row(
            f"POST /v1/leads, {conns} conns",
            fmt_rate(create.rps, "req/s"),
            f"target ≥ {TARGET_RPS:,.0f} req/s",
            f"{fmt_ratio(vs_rps_target)} of target ({'meets' if vs_rps_target >= 1 else 'below'})",
        ),
        Row("  ÷ raw asyncpg floor", "", "", fmt_ratio(vs_floor)),
        Row("  ÷ HTTP ceiling", "", "", fmt_ratio(vs_ceiling)),
        Row("  latency p50 / p90", f"{fmt_ms(create.p50_ms)} / {fmt_ms(create.p90_ms)}"),
        Row(
            "  latency p99",
            fmt_ms(create.p99_ms),
            f"target ≤ {TARGET_P99_MS:g} ms",
            f"{fmt_ratio(vs_p99_target)} of target ({'meets' if vs_p99_target <= 1 else 'above'})",
        ),
        Row("  latency max", fmt_ms(create.max_ms)),
        Row(
            "  captures per group-commit transaction",
            f"{groups[0] / groups[1]:.1f}" if groups[1] else "n/a",
            f"{groups[1]:,.0f} transactions",
        ),
        Row("  requests measured", f"{create.requests:,}"),
        Row("  non-2xx / socket errors", f"{create.non_2xx} / {create.socket_errors}", "0 / 0"),
        Row(
            "leads process CPU during load",
            "n/a" if cpu is None else f"{cpu:.2f} cores",
            f"of {os.cpu_count()} on the machine",
        ),
        Row(
            "leads process RSS: ready / peak",
            f"{(rss_ready or 0) / MB:.0f} / {peak_mb if peak_mb is not None else 'n/a'} MB",
            f"peak from {peak['source']}",
        ),
        Row(
            "outbox: pending at end of load",
            f"{at_end.pending:,} of {at_end.outbox:,}",
            "relay drained it in "
            + (
                f"{drain_seconds:.1f} s"
                if drain_seconds is not None
                else f"> {OUTBOX_DRAIN_WAIT:g} s"
            ),
        ),
    ]
    for name, load in (("POST /v1/leads", create), ("GET /healthz", ceiling)):
        if load.non_2xx or load.socket_errors:
            result.problems.append(
                f"{name}: {load.non_2xx} non-2xx answers {load.statuses}, "
                f"{load.socket_errors} socket errors"
            )
            result.problems += [f"  {s}" for s in load.samples]
    if floor.errors:
        result.problems.append(f"raw floor: {floor.errors} failed tx, first: {floor.first_error}")
    if drained.leads != drained.outbox:
        result.problems.append(
            f"{drained.leads} leads but {drained.outbox} outbox rows: each create must write "
            "exactly one event"
        )
    result.data = {
        "config": {
            "connections": conns,
            "seconds": ctx.load.seconds,
            "warmup_seconds": ctx.load.warmup,
            "limit_seconds": ctx.limit_seconds,
            "generator": describe_generator(ctx.load),
        },
        "servers": ctx.servers.describe(),
        "namespace": stack.namespace,
        "startup_seconds": round(startup, 2),
        "limits": {"raw_asyncpg_floor": floor.to_json(), "http_ceiling": ceiling.to_json()},
        "lead_create": create.to_json(),
        "ratios": {
            "to_raw_asyncpg_floor": vs_floor,
            "to_http_ceiling": vs_ceiling,
        },
        "targets": {
            "rps": {"target": TARGET_RPS, "measured": create.rps, "ratio": vs_rps_target},
            "p99_ms": {"target": TARGET_P99_MS, "measured": create.p99_ms, "ratio": vs_p99_target},
        },
        "leads_process": {
            "cpu_cores_during_load": cpu,
            "rss_ready_mb": round((rss_ready or 0) / MB, 1),
            **peak,
        },
        "flamegraph": str(flamegraph) if flamegraph else None,
        "group_commit": {"captures": groups[0], "transactions": groups[1]},
        "outbox": {
            "rows": at_end.outbox,
            "pending_at_end_of_load": at_end.pending,
            "drain_seconds": drain_seconds,
            "leads_rows": drained.leads,
        },
    }
    return result


SCENARIO = Scenario(
    name="lead_create",
    title="single-lead REST create (validated, persisted with its outbox event)",
    run=run,
)
