"""Runs import jobs: claims one under a lease, streams its file through ``prepare`` (in a
worker thread) and ``bulk.write`` (one transaction per slice) with the two overlapped, and
records progress with every slice. A crashed runner's lease runs out and any replica
resumes the job after its last committed slice."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any

from crm_leads.imports import bulk, store
from crm_leads.imports.columns import parse_header
from crm_leads.imports.prepare import Defaults, Prepared, prepare
from crm_leads.imports.reader import csv_records, xlsx_records
from crm_leads.imports.store import ImportState, LeaseLost
from crm_leads.scoring import service as scoring
from crm_leads.scoring.rules import Scorer
from crm_platform.db import Database
from crm_platform.errors import DomainError

log = logging.getLogger(__name__)

# A slice a concurrent capture keeps colliding with is retried this often before the job
# gives up (each retry sees the colliding keys as existing, so one retry normally does).
KEY_RETRIES = 5
# A job that crashed its runner this many times is failed rather than retried forever.
MAX_ATTEMPTS = 5
SWITCH_INTERVAL = 0.0005


class ImportRunner:
    def __init__(
        self,
        db: Database,
        *,
        phone_region: str,
        slice_rows: int,
        lease_seconds: float,
    ) -> None:
        self.db = db
        self.phone_region = phone_region
        self.slice_rows = slice_rows
        self.lease_seconds = lease_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Set by the upload endpoint so a new job starts without waiting for the next poll.
        self.wake = asyncio.Event()

    async def run_pending(self) -> int:
        """Runs claimable jobs one after another until none is left; returns how many."""
        ran = 0
        while True:
            async with self.db.unit_of_work() as conn:
                job = await store.claim(
                    conn=conn, owner=self.owner, lease_seconds=self.lease_seconds
                )
            if job is None:
                return ran
            ran += 1
            await self.run(job)

    async def run(self, job: Any) -> None:
        started = time.perf_counter()
        if job.attempts > MAX_ATTEMPTS:
            await self._finish(job.id, ImportState.FAILED, f"gave up after {MAX_ATTEMPTS} attempts")
            return
        try:
            with tempfile.TemporaryFile(prefix="crm-import-") as file:
                async with self.db.read() as conn:
                    await store.spool(conn=conn, job_id=job.id, into=file)
                file.seek(0)
                await self._import(job, file)
        except LeaseLost:
            log.warning("import %s: lease lost, another replica continues it", job.id)
            return
        except DomainError as exc:
            await self._finish(job.id, ImportState.FAILED, exc.message)
            return
        await self._finish(job.id, ImportState.SUCCEEDED)
        log.info("import %s finished in %.1f s", job.id, time.perf_counter() - started)

    async def _import(self, job: Any, file: IO[bytes]) -> None:
        records = csv_records(file, job.encoding) if job.format == "csv" else xlsx_records(file)
        _, header_cells = await asyncio.to_thread(next, records)
        header = parse_header(header_cells)
        done = int(job.rows_done)
        if done:  # resume: skip what committed slices consumed (parse only, no validation)
            await asyncio.to_thread(_skip, records, done)
        async with self.db.read() as conn:
            rules = await scoring.latest(conn=conn, tenant_id=job.tenant_id)
        scorer = Scorer(rules.rules)
        defaults = Defaults(job.source, job.campaign, self.phone_region)
        target = bulk.Job(job.id, job.tenant_id, job.owner_org_id, job.owner_org_path)

        def next_slice() -> Prepared:
            return prepare(itertools.islice(records, self.slice_rows), header, defaults, scorer)

        # The parsing thread holds the GIL for long stretches; by default the event loop
        # would wait up to 5 ms for it after every database reply.
        sys.setswitchinterval(SWITCH_INTERVAL)
        pending = asyncio.ensure_future(asyncio.to_thread(next_slice))
        try:
            while True:
                prepared = await pending
                if not prepared.rows:
                    return
                # Parse and validate the next slice while this one is written.
                pending = asyncio.ensure_future(asyncio.to_thread(next_slice))
                await self._write(target, prepared, scorer, done)
                done += prepared.rows
        finally:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def _write(
        self, job: bulk.Job, prepared: Prepared, scorer: Scorer, rows_done: int
    ) -> None:
        for attempt in itertools.count(1):
            try:
                async with self.db.unit_of_work() as conn:
                    await store.hold(
                        conn=conn, job_id=job.id, owner=self.owner, rows_done=rows_done
                    )
                    written = await bulk.write(conn, job, prepared, scorer)
                    await store.advance(
                        conn=conn,
                        job_id=job.id,
                        rows=prepared.rows,
                        written=written,
                        lease_seconds=self.lease_seconds,
                    )
                return
            except bulk.KeyTaken:
                if attempt >= KEY_RETRIES:
                    raise
                log.info("import %s: a concurrent capture took a key; rewriting the slice", job.id)

    async def _finish(self, job_id: uuid.UUID, state: ImportState, error: str = "") -> None:
        async with self.db.unit_of_work() as conn:
            await store.finish(conn=conn, job_id=job_id, owner=self.owner, state=state, error=error)


def _skip(records: Iterator[tuple[int, list[str]]], count: int) -> None:
    for _ in itertools.islice(records, count):
        pass
