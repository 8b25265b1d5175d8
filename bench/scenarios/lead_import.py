"""lead_import: bulk import of a CSV file through the full path — upload, parse, validate,
normalise, de-duplicate (in the file and against existing leads), score, cleanse, persist,
outbox — as a background job of one leads process.

Measured in one run, on the same machine and servers:

1. seed: an import of ``BENCH_IMPORT_EXISTING`` unique leads (default 1,000,000) into the
   empty service: the leads the measured file partly duplicates;
2. the measured file of ``BENCH_IMPORT_ROWS`` rows (default 1,000,000): about 2 % invalid
   (bad phone or no name), 5 % repeats of earlier rows of the same file, 5 % people already
   among the seeded leads, the rest new; about half the rows carry an email as well;
3. raw COPY of the same file's rows into PostgreSQL (same server, same run): the server
   parsing the CSV into a plain table with a uuid primary key (the TOOLCHAIN.md reference),
   and asyncpg's binary COPY of the same rows into a table shaped and indexed like ``leads``.

Issue 3's targets (≥ 50,000 leads/s, ≥ 30 % of raw COPY, peak RSS ≤ 1 GiB) are printed next
to the figures, never asserted."""

from __future__ import annotations

import asyncio
import csv
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from bench.context import BenchContext, Scenario
from bench.procstats import (
    MB,
    BackendCpu,
    ProcessMonitor,
    backends_of,
    rss_bytes,
    split_cpu_seconds,
)
from bench.report import Row, ScenarioResult, fmt_rate, fmt_ratio, progress
from bench.stack import DealerUser, Stack, asyncpg_dsn, create_dealer_user

TARGET_RATE = 50_000.0
TARGET_COPY_RATIO = 0.30
TARGET_PEAK_MB = 1024.0
HEADER = ["full_name", "phone", "email", "company", "province", "city", "campaign"]
CITIES = [("浙江", "杭州"), ("浙江", "宁波"), ("江苏", "南京"), ("广东", "深圳"), ("四川", "成都")]
JOB_TIMEOUT = 1800.0


@dataclass
class FileStats:
    path: Path
    rows: int
    invalid: int
    in_file_repeats: int
    existing_repeats: int
    size: int


def _write_file(path: Path, rows: int, *, existing: int, mix: bool, seed: int) -> FileStats:
    """Seed file (``mix`` off): ``rows`` unique people with 138 phones. Measured file: new
    people get 139 phones, repeats reuse a phone already written or a seeded one."""
    rng = random.Random(seed)
    invalid = repeats = olds = 0
    written: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(rows):
            province, city = CITIES[i % len(CITIES)]
            name = f"客户{i}"
            email = f"u{seed}-{i}@example.com" if i % 2 == 0 else ""
            roll = rng.random() if mix else 1.0
            if roll < 0.02:
                invalid += 1
                phone, name = ("12345", name) if i % 2 else (f"139{i:08d}", "")
            elif roll < 0.07 and written:
                repeats += 1
                phone, email = rng.choice(written), ""
            elif roll < 0.12 and existing:
                olds += 1
                phone, email = f"138{rng.randrange(existing):08d}", ""
            else:
                phone = f"{'139' if mix else '138'}{i:08d}"
                if mix and len(written) < 200_000:
                    written.append(phone)
            campaign = "spring-expo" if i % 3 == 0 else ""
            writer.writerow(
                [name, phone, email, "某某汽车销售服务有限公司", province, city, campaign]
            )
    return FileStats(path, rows, invalid, repeats, olds, path.stat().st_size)


@dataclass
class ImportRun:
    job: dict[str, Any]
    upload_seconds: float
    job_seconds: float  # upload finished -> job SUCCEEDED

    @property
    def total_seconds(self) -> float:
        return self.upload_seconds + self.job_seconds


def _import(url: str, user: DealerUser, stats: FileStats) -> ImportRun:
    with httpx.Client(timeout=600) as client:
        t0 = time.monotonic()
        with stats.path.open("rb") as f:
            r = client.post(
                f"{url}/v1/lead-imports",
                params={"file_name": stats.path.name, "source": "bench_import"},
                content=iter(lambda: f.read(1 << 20), b""),
                headers={**user.auth, "Content-Type": "text/csv"},
            )
        uploaded = time.monotonic()
        if r.status_code != 202:
            raise RuntimeError(f"upload answered {r.status_code}: {r.text[:500]}")
        job_id = r.json()["id"]
        while True:
            job = client.get(f"{url}/v1/lead-imports/{job_id}", headers=user.auth).json()
            if job["state"] in ("SUCCEEDED", "FAILED"):
                break
            if time.monotonic() - uploaded > JOB_TIMEOUT:
                raise TimeoutError(f"import {job_id} still {job['state']}: {job}")
            time.sleep(0.1)
        done = time.monotonic()
    return ImportRun(job, uploaded - t0, done - uploaded)


_RAW_TABLE = """
CREATE TABLE raw_rows (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), full_name text,
phone text, email text, company text, province text, city text, campaign text)"""
_SHAPED_TABLE = "CREATE TABLE shaped_leads (LIKE leads INCLUDING ALL)"


async def _raw_copy(dsn: str, stats: FileStats, user: DealerUser) -> tuple[float, float]:
    """Seconds for (server-side CSV COPY into a plain uuid-keyed table, binary COPY of the
    same rows into a leads-shaped table with leads' indexes)."""
    import asyncpg

    from crm_platform.ids import new_id

    conn: Any = await asyncpg.connect(dsn)
    try:
        await conn.execute(_RAW_TABLE)
        await conn.execute(_SHAPED_TABLE)
        t0 = time.monotonic()
        with stats.path.open("rb") as f:
            await conn.copy_to_table(
                "raw_rows", source=f, columns=HEADER, format="csv", header=True
            )
        plain = time.monotonic() - t0
        tenant, org = uuid.UUID(user.tenant_id), uuid.UUID(user.dealer_id)
        with stats.path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            records = [
                (
                    new_id(),
                    tenant,
                    org,
                    user.dealer_path,
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    "bench",
                    1,
                )
                for r in reader
            ]
        t0 = time.monotonic()
        await conn.copy_records_to_table(
            "shaped_leads",
            records=records,
            columns=[
                "id",
                "tenant_id",
                "owner_org_id",
                "owner_org_path",
                "full_name",
                "phone",
                "email",
                "company",
                "province",
                "city",
                "source",
                "status",
            ],
        )
        shaped = time.monotonic() - t0
    finally:
        await conn.close()
    return plain, shaped


async def _db_counts(dsn: str) -> dict[str, int]:
    import asyncpg

    conn: Any = await asyncpg.connect(dsn)
    try:
        return {
            "leads": int(await conn.fetchval("SELECT count(*) FROM leads")),
            "intents": int(await conn.fetchval("SELECT count(*) FROM lead_intents")),
            "keys": int(await conn.fetchval("SELECT count(*) FROM lead_keys")),
            "outbox": int(await conn.fetchval("SELECT count(*) FROM crm_outbox")),
            "pending": int(
                await conn.fetchval("SELECT count(*) FROM crm_outbox WHERE published_at IS NULL")
            ),
            "dup_phones": int(
                await conn.fetchval(
                    "SELECT count(*) FROM (SELECT phone FROM leads WHERE phone <> '' "
                    "GROUP BY phone HAVING count(*) > 1) d"
                )
            ),
        }
    finally:
        await conn.close()


def run(ctx: BenchContext) -> ScenarioResult:
    stack = Stack(ctx.servers)
    try:
        return _run(ctx, stack)
    finally:
        stack.close()


def _run(ctx: BenchContext, stack: Stack) -> ScenarioResult:
    rows = int(os.environ.get("BENCH_IMPORT_ROWS", "1000000"))
    existing = int(os.environ.get("BENCH_IMPORT_EXISTING", str(rows)))
    work = ctx.out_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    progress(f"  writing the seed file ({existing:,} rows) and the measured file ({rows:,} rows)")
    seed_stats = _write_file(
        work / f"{stack.namespace}-seed.csv", existing, existing=0, mix=False, seed=1
    )
    file_stats = _write_file(
        work / f"{stack.namespace}-import.csv", rows, existing=existing, mix=True, seed=2
    )

    async def migrate() -> str:
        await stack.migrate("directory")
        await stack.migrate("leads")
        return await stack.migrate("leads", "_raw")

    progress("  migrating, starting directory + leads processes")
    raw_url = asyncio.run(migrate())
    stack.spawn("directory")
    leads = stack.spawn("leads")
    stack.wait_ready("directory", "leads")
    user = asyncio.run(create_dealer_user(stack.processes["directory"].url, stack.bootstrap_token))
    dsn = asyncpg_dsn(stack.db_url("leads"))
    try:
        with ProcessMonitor(leads.pid) as monitor:
            rss_ready = rss_bytes(leads.pid)
            progress(f"  seed import: {existing:,} leads")
            seeded = _import(leads.url, user, seed_stats)
            progress(f"  measured import: {rows:,} rows")
            database = make_url(stack.db_url("leads")).database or ""
            before = split_cpu_seconds(leads.pid)
            with BackendCpu(lambda: backends_of(database)) as pg_cpu:
                measured = _import(leads.url, user, file_stats)
            after = split_cpu_seconds(leads.pid)
            cpu = _cpu_split(before, after, pg_cpu.seconds)
            peak = monitor.peak()
        progress("  raw COPY of the same rows")
        plain_s, shaped_s = asyncio.run(_raw_copy(asyncpg_dsn(raw_url), file_stats, user))
        counts = asyncio.run(_db_counts(dsn))
        drain_started = time.monotonic()
        while counts["pending"] and time.monotonic() - drain_started < 60:
            time.sleep(0.5)
            counts = asyncio.run(_db_counts(dsn))
        drain = time.monotonic() - drain_started
    finally:
        for s in (seed_stats, file_stats):
            s.path.unlink(missing_ok=True)
    return _result(
        stack, file_stats, seeded, measured, plain_s, shaped_s, counts, drain, rss_ready, peak, cpu
    )


def _cpu_rows(cpu: dict[str, float], rows: int) -> list[Row]:
    if not cpu:
        return []
    per_row = {part: seconds / rows * 1e6 for part, seconds in cpu.items()}
    total = sum(per_row.values())
    cores = os.cpu_count() or 1
    return [
        Row(
            "CPU per row: service / workers / PostgreSQL",
            " / ".join(f"{per_row[k]:.1f}" for k in ("service", "workers", "postgres")) + " µs",
            f"sum {total:.1f} µs",
            f"{cores} cores ÷ sum: {fmt_rate(cores / total * 1e6, 'rows/s')} at best",
        )
    ]


def _cpu_split(
    before: tuple[float, float] | None, after: tuple[float, float] | None, pg: float | None
) -> dict[str, float]:
    """CPU seconds of the measured import by part: the leads process (upload, writer, relay,
    consumers), its import workers (parse, validate, score) and PostgreSQL's backends."""
    if before is None or after is None or pg is None:
        return {}
    return {"service": after[0] - before[0], "workers": after[1] - before[1], "postgres": pg}


def _result(
    stack: Stack,
    stats: FileStats,
    seeded: ImportRun,
    measured: ImportRun,
    plain_s: float,
    shaped_s: float,
    counts: dict[str, int],
    drain: float,
    rss_ready: int | None,
    peak: dict[str, Any],
    cpu: dict[str, float],
) -> ScenarioResult:
    rows = stats.rows
    job_rate = rows / measured.job_seconds
    total_rate = rows / measured.total_seconds
    plain_rate = rows / plain_s
    shaped_rate = rows / shaped_s
    job = measured.job
    peak_mb = peak["peak_rss_mb"]
    result = ScenarioResult(
        name="lead_import",
        title="bulk CSV import job (parse, validate, dedup, score, persist, outbox)",
    )
    load1, _, _ = os.getloadavg()
    result.notes = [
        f"file: {rows:,} rows, {stats.size / MB:.0f} MB; {stats.invalid:,} invalid, "
        f"{stats.in_file_repeats:,} repeats within the file, {stats.existing_repeats:,} of "
        f"{seeded.job['rows_created']:,} existing leads",
        f"namespace {stack.namespace}; machine: {os.cpu_count()} CPUs, load average now "
        f"{load1:.2f} (other work on the machine skews every figure)",
    ]
    result.rows = [
        Row(
            "seed import into an empty service",
            fmt_rate(seeded.job["rows_done"] / seeded.job_seconds, "rows/s"),
            f"{seeded.job['rows_done']:,} rows in {seeded.job_seconds:.1f} s",
        ),
        Row("raw COPY: server-side CSV into a uuid-keyed table", fmt_rate(plain_rate, "rows/s")),
        Row("raw COPY: binary into a leads-shaped, indexed table", fmt_rate(shaped_rate, "rows/s")),
        Row(
            "import job (upload done -> SUCCEEDED)",
            fmt_rate(job_rate, "rows/s"),
            f"target ≥ {TARGET_RATE:,.0f}",
            f"{fmt_ratio(job_rate / TARGET_RATE)} of target "
            f"({'meets' if job_rate >= TARGET_RATE else 'below'})",
        ),
        Row(
            "  ÷ raw CSV COPY",
            "",
            f"target ≥ {TARGET_COPY_RATIO:.0%}",
            f"{fmt_ratio(job_rate / plain_rate)} "
            f"({'meets' if job_rate / plain_rate >= TARGET_COPY_RATIO else 'below'})",
        ),
        Row("  ÷ raw COPY into leads-shaped table", "", "", fmt_ratio(job_rate / shaped_rate)),
        Row(
            "end to end incl. upload",
            fmt_rate(total_rate, "rows/s"),
            f"upload {measured.upload_seconds:.1f} s + job {measured.job_seconds:.1f} s",
        ),
        Row(
            "  created / merged / invalid",
            f"{job['rows_created']:,} / {job['rows_merged']:,} / {job['rows_invalid']:,}",
        ),
        *_cpu_rows(cpu, rows),
        Row(
            "leads process RSS: ready / peak",
            f"{(rss_ready or 0) / MB:.0f} / {peak_mb} MB",
            f"target ≤ {TARGET_PEAK_MB:,.0f} MB",
            "meets" if peak_mb is not None and peak_mb <= TARGET_PEAK_MB else "above",
        ),
        Row(
            "outbox: batch events / pending after drain",
            f"{counts['outbox']:,} / {counts['pending']:,}",
            f"drained in {drain:.1f} s",
        ),
    ]
    if job["state"] != "SUCCEEDED" or seeded.job["state"] != "SUCCEEDED":
        result.problems.append(f"import failed: {job.get('error') or seeded.job.get('error')}")
    if job["rows_invalid"] != stats.invalid:
        result.problems.append(
            f"{job['rows_invalid']} invalid rows reported, {stats.invalid} written"
        )
    if (
        job["rows_done"] != rows
        or job["rows_created"] + job["rows_merged"] + job["rows_invalid"] != rows
    ):
        result.problems.append(f"row counts do not add up: {job}")
    if counts["leads"] != seeded.job["rows_created"] + job["rows_created"]:
        result.problems.append(f"{counts['leads']} leads in the table: {counts}")
    if counts["dup_phones"]:
        result.problems.append(f"{counts['dup_phones']} phones on more than one lead")
    result.data = {
        "rows": rows,
        "file_bytes": stats.size,
        "invalid_written": stats.invalid,
        "in_file_repeats_written": stats.in_file_repeats,
        "existing_repeats_written": stats.existing_repeats,
        "seed": {"job": seeded.job, "job_seconds": seeded.job_seconds},
        "measured": {
            "job": job,
            "upload_seconds": measured.upload_seconds,
            "job_seconds": measured.job_seconds,
            "job_rows_per_second": job_rate,
            "end_to_end_rows_per_second": total_rate,
        },
        "raw_copy": {
            "csv_plain_rows_per_second": plain_rate,
            "binary_shaped_rows_per_second": shaped_rate,
        },
        "ratios": {"to_csv_copy": job_rate / plain_rate, "to_shaped_copy": job_rate / shaped_rate},
        "db": counts,
        "outbox_drain_seconds": drain,
        "cpu_seconds": cpu,
        "leads_process": {"rss_ready_mb": round((rss_ready or 0) / MB, 1), **peak},
    }
    return result


SCENARIO = Scenario(
    name="lead_import",
    title="bulk CSV import job (parse, validate, dedup, score, persist, outbox)",
    run=run,
)
