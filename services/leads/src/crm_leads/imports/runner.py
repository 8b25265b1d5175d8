"""Runs import jobs: claims one under a lease, streams its file through ``prepare`` (in
worker processes, crm_leads.imports.workers) and ``bulk.write`` (one transaction per slice)
with the two overlapped, and records progress with every slice. A crashed runner's lease
runs out and any replica resumes the job after its last committed slice."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
import uuid
from typing import Any

from crm_leads.dedup import service as dedup_service
from crm_leads.imports import bulk, store
from crm_leads.imports.prepare import Defaults, Prepared
from crm_leads.imports.store import ImportState, LeaseLost
from crm_leads.imports.workers import SliceProducer, SliceSource
from crm_leads.scoring import service as scoring
from crm_leads.scoring.rules import Scorer, rules_json
from crm_leads.tenantsettings import service as tenant_settings
from crm_platform import metrics
from crm_platform.db import Database
from crm_platform.errors import DomainError

log = logging.getLogger(__name__)

# A job that crashed its runner this many times is failed rather than retried forever.
MAX_ATTEMPTS = 5


class ImportRunner:
    def __init__(
        self,
        db: Database,
        *,
        phone_region: str,
        slice_rows: int,
        lease_seconds: float,
        workers: int = 1,
    ) -> None:
        self.db = db
        self.phone_region = phone_region
        self.slice_rows = slice_rows
        self.lease_seconds = lease_seconds
        self.workers = workers
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
            # Named: the worker processes open it by path.
            with tempfile.NamedTemporaryFile(prefix="crm-import-") as file:
                async with self.db.read() as conn:
                    await store.spool(conn=conn, job_id=job.id, into=file)
                file.flush()
                await self._import(job, file.name)
        except LeaseLost:
            log.warning("import %s: lease lost, another replica continues it", job.id)
            return
        except DomainError as exc:
            await self._finish(job.id, ImportState.FAILED, exc.message)
            return
        await self._finish(job.id, ImportState.SUCCEEDED)
        log.info("import %s finished in %.1f s", job.id, time.perf_counter() - started)

    async def _import(self, job: Any, path: str) -> None:
        async with self.db.read() as conn:
            rules = await scoring.latest(conn=conn, tenant_id=job.tenant_id)
            dedup_rules = await dedup_service.latest(conn=conn, tenant_id=job.tenant_id)
            settings = await tenant_settings.latest(conn=conn, tenant_id=job.tenant_id)
        # The set-based writer implements the built-in rules (system keys, merge); a tenant's
        # own rules are applied row by row through the single-capture path.
        set_based = dedup_rules.rules == dedup_service.DEFAULT.rules
        done = int(job.rows_done)
        source = SliceSource(
            path=path,
            file_format=job.format,
            encoding=job.encoding,
            skip=done,
            slice_rows=self.slice_rows,
            defaults=Defaults(
                job.source, job.campaign, settings.settings.phone_region or self.phone_region
            ),
            scoring_rules=rules_json(rules.rules),
            group=set_based,
        )
        scorer = Scorer(rules.rules)
        target = bulk.Job(
            job.id, job.tenant_id, job.owner_org_id, job.owner_org_path, job.created_by
        )
        with SliceProducer(source, self.workers) as slices:
            while True:
                with metrics.IMPORT_SLICE.labels("prepare").time():
                    prepared = await slices.next()
                if not prepared.rows:
                    return
                with metrics.IMPORT_SLICE.labels("write").time():
                    await self._write(target, prepared, scorer, done, set_based=set_based)
                done += prepared.rows

    async def _write(
        self, job: bulk.Job, prepared: Prepared, scorer: Scorer, rows_done: int, *, set_based: bool
    ) -> None:
        # First the fast path (COPY of the new keys); if a concurrent capture took one of
        # them meanwhile, the slice rolls back whole and is written again the careful way,
        # which merges into whoever holds a key instead of failing.
        for careful in (False, True):
            try:
                async with self.db.unit_of_work() as conn:
                    await store.hold(
                        conn=conn, job_id=job.id, owner=self.owner, rows_done=rows_done
                    )
                    written = (
                        await bulk.write(conn, job, prepared, scorer, careful=careful)
                        if set_based
                        else await bulk.write_each(conn, job, prepared)
                    )
                    await store.advance(
                        conn=conn,
                        job_id=job.id,
                        rows=prepared.rows,
                        written=written,
                        lease_seconds=self.lease_seconds,
                    )
                metrics.LEADS_CAPTURED.labels("created").inc(written.created)
                metrics.LEADS_CAPTURED.labels("merged").inc(written.merged)
                metrics.LEADS_CAPTURED.labels("rejected").inc(written.invalid)
                return
            except bulk.KeyTaken:
                log.info("import %s: a concurrent capture took a key; rewriting the slice", job.id)
        raise AssertionError("unreachable: the careful write cannot raise KeyTaken")

    async def _finish(self, job_id: uuid.UUID, state: ImportState, error: str = "") -> None:
        async with self.db.unit_of_work() as conn:
            await store.finish(conn=conn, job_id=job_id, owner=self.owner, state=state, error=error)
