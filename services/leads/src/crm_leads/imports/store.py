"""Import jobs in the database: create with the uploaded file, claim with a lease, record
progress with each slice, finish. Keyword-only functions taking the connection."""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.imports.bulk import Written
from crm_leads.imports.models import lead_import_chunks, lead_import_errors, lead_imports
from crm_platform import records
from crm_platform.auth import Principal
from crm_platform.ids import new_id
from crm_platform.pagination import PageRequest

CHUNK_BYTES = 1 << 20


class ImportState(enum.IntEnum):
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4


class LeaseLost(Exception):
    """Another replica took the job over (this one stalled past its lease): stop."""


async def create(
    *,
    conn: AsyncConnection,
    principal: Principal,
    file_name: str,
    file_format: str,
    encoding: str,
    source: str,
    campaign: str,
) -> uuid.UUID:
    job_id = new_id()
    await conn.execute(
        lead_imports.insert().values(
            id=job_id,
            **records.owned_by(principal),
            created_by=principal.subject,
            file_name=file_name,
            format=file_format,
            encoding=encoding,
            source=source,
            campaign=campaign,
            size_bytes=0,
            state=ImportState.QUEUED,
            rows_total=0,
        )
    )
    return job_id


async def add_chunk(*, conn: AsyncConnection, job_id: uuid.UUID, seq: int, data: bytes) -> None:
    await conn.execute(lead_import_chunks.insert().values(import_id=job_id, seq=seq, data=data))


async def uploaded(
    *, conn: AsyncConnection, job_id: uuid.UUID, size_bytes: int, rows_total: int
) -> None:
    await conn.execute(
        lead_imports.update()
        .where(lead_imports.c.id == job_id)
        .values(size_bytes=size_bytes, rows_total=rows_total)
    )


_CLAIM = sa.text(
    "UPDATE lead_imports SET state = 2, lease_owner = :owner, "
    "lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1, "
    "update_time = now() "
    "WHERE id = (SELECT id FROM lead_imports WHERE state IN (1, 2) "
    "AND (lease_until IS NULL OR lease_until < now()) ORDER BY id LIMIT 1 "
    "FOR UPDATE SKIP LOCKED) RETURNING *"
)


async def claim(*, conn: AsyncConnection, owner: str, lease_seconds: float) -> Any | None:
    """The oldest runnable job — queued, or running under a lease that ran out (its runner
    crashed) — now leased to ``owner``; None when there is none."""
    return (await conn.execute(_CLAIM, {"owner": owner, "lease": lease_seconds})).first()


async def spool(*, conn: AsyncConnection, job_id: uuid.UUID, into: IO[bytes]) -> None:
    """The uploaded file, chunk by chunk, into a local temporary file."""
    seq = 0
    while True:
        data = (
            await conn.execute(
                sa.select(lead_import_chunks.c.data).where(
                    lead_import_chunks.c.import_id == job_id, lead_import_chunks.c.seq == seq
                )
            )
        ).scalar()
        if data is None:
            return
        into.write(data)
        seq += 1


async def hold(*, conn: AsyncConnection, job_id: uuid.UUID, owner: str, rows_done: int) -> None:
    """First statement of a slice's transaction: still ours, and nobody wrote past us."""
    row = (
        await conn.execute(
            sa.select(lead_imports.c.rows_done)
            .where(lead_imports.c.id == job_id, lead_imports.c.lease_owner == owner)
            .with_for_update()
        )
    ).first()
    if row is None or row.rows_done != rows_done:
        raise LeaseLost(str(job_id))


async def advance(
    *,
    conn: AsyncConnection,
    job_id: uuid.UUID,
    rows: int,
    written: Written,
    lease_seconds: float,
) -> None:
    """The slice's progress, in the slice's transaction: effects and checkpoint commit
    together, so a resumed job neither repeats nor skips a row."""
    c = lead_imports.c
    await conn.execute(
        lead_imports.update()
        .where(c.id == job_id)
        .values(
            rows_done=c.rows_done + rows,
            rows_created=c.rows_created + written.created,
            rows_merged=c.rows_merged + written.merged,
            rows_invalid=c.rows_invalid + written.invalid,
            rows_total=sa.func.greatest(c.rows_total, c.rows_done + rows),
            lease_until=sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds),
            update_time=sa.func.now(),
        )
    )


async def finish(
    *, conn: AsyncConnection, job_id: uuid.UUID, owner: str, state: ImportState, error: str = ""
) -> None:
    """Final state; the file is dropped (the error report is kept)."""
    c = lead_imports.c
    done = await conn.execute(
        lead_imports.update()
        .where(c.id == job_id, c.lease_owner == owner)
        .values(
            state=state,
            error=error,
            lease_owner=None,
            lease_until=None,
            finish_time=sa.func.now(),
            update_time=sa.func.now(),
            # Exact now: the upload-time figure counted lines, not records.
            rows_total=c.rows_done if state == ImportState.SUCCEEDED else c.rows_total,
        )
    )
    if done.rowcount:
        await conn.execute(
            lead_import_chunks.delete().where(lead_import_chunks.c.import_id == job_id)
        )


async def get(*, conn: AsyncConnection, principal: Principal, job_id: uuid.UUID) -> Any:
    return await records.get_visible(conn, lead_imports, principal, job_id, kind="lead import")


async def list_visible(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> Sequence[Any]:
    return await records.visible_page(conn, lead_imports, principal, page)


async def errors(
    *, conn: AsyncConnection, job_id: uuid.UUID, batch: int = 5000
) -> AsyncIterator[Sequence[Any]]:
    """The rejected rows in file order, ``batch`` at a time (a report may be large)."""
    after = 0
    e = lead_import_errors.c
    while True:
        rows = (
            await conn.execute(
                sa.select(e.row_no, e.fields, e.messages, e.raw)
                .where(e.import_id == job_id, e.row_no > after)
                .order_by(e.row_no)
                .limit(batch)
            )
        ).all()
        if not rows:
            return
        yield rows
        after = rows[-1].row_no
