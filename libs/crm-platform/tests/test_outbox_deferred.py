"""outbox.deferred against real PostgreSQL: a step's events go out in one INSERT, a nested
block's events leave with its savepoint's rollback, and nothing stays behind on the pooled
connection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from crm.directory.v1 import events_pb2
from crm_platform.db import Database, platform_metadata
from crm_platform.migrations import ensure_database
from crm_platform.outbox import NewEvent, add_event, add_events, deferred, outbox
from crm_platform.testing.harness import ServiceStarter

TENANT = uuid.uuid4()
SUBJECT = "crm.directory.tenant.created.v1"


@pytest.fixture(scope="module")
async def db(starter: ServiceStarter) -> AsyncIterator[Database]:
    db_url = starter.db_url("outboxdeferred")
    await ensure_database(db_url)
    database = Database(db_url, pool_size=1)
    async with database.engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
def inserts(db: Database) -> AsyncIterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO crm_outbox"):
            seen.append(statement)

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    yield seen  # type: ignore[misc]
    sa.event.remove(db.engine.sync_engine, "before_cursor_execute", count)


async def _stage(conn: Any, name: str) -> uuid.UUID:
    return await add_event(
        conn,
        event_type=SUBJECT,
        payload=events_pb2.TenantCreated(tenant={"display_name": name}),
        tenant_id=TENANT,
        org_path="/hq/",
        producer="test",
    )


async def _staged(db: Database, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    async with db.read() as conn:
        rows = await conn.execute(sa.select(outbox.c.id).where(outbox.c.id.in_(ids)))
        return {row.id for row in rows}


async def test_a_steps_events_are_one_insert(db: Database, inserts: list[str]) -> None:
    db.outbox_signal.clear()
    async with db.unit_of_work() as conn, deferred(conn):
        ids = [await _stage(conn, "a"), await _stage(conn, "b")]
        (third,) = await add_events(
            conn,
            [NewEvent(SUBJECT, events_pb2.TenantCreated(), TENANT, "/hq/")],
            producer="test",
        )
        ids.append(third)
        assert inserts == []  # nothing written before the block ends
    assert len(inserts) == 1
    assert await _staged(db, ids) == set(ids)
    assert db.outbox_signal.is_set()  # the relay is woken as for any event


async def test_a_failed_savepoints_events_leave_with_it(db: Database, inserts: list[str]) -> None:
    async with db.unit_of_work() as conn, deferred(conn):
        before = await _stage(conn, "before")
        lost: list[uuid.UUID] = []
        with pytest.raises(RuntimeError):
            async with conn.begin_nested(), deferred(conn):
                lost.append(await _stage(conn, "rolled back"))
                raise RuntimeError("the step fails")
        async with conn.begin_nested(), deferred(conn):
            kept = await _stage(conn, "kept")
        after = await _stage(conn, "after")
    assert len(inserts) == 1
    assert await _staged(db, [before, *lost, kept, after]) == {before, kept, after}


async def test_an_exception_leaves_nothing_on_the_pooled_connection(
    db: Database, inserts: list[str]
) -> None:
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as conn, deferred(conn):
            lost = await _stage(conn, "lost")
            raise RuntimeError("the handler fails")
    # pool_size=1: the same connection again, written through at once as usual.
    async with db.unit_of_work() as conn:
        now = await _stage(conn, "now")
        assert len(inserts) == 1
    assert await _staged(db, [lost, now]) == {now}


async def test_a_failed_unit_does_not_wake_the_relay_later(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as conn:
            await _stage(conn, "rolled back")
            raise RuntimeError("the use case fails")
    db.outbox_signal.clear()
    async with db.unit_of_work() as conn:  # the same pooled connection (pool_size=1)
        await conn.execute(sa.text("SELECT 1"))
    assert not db.outbox_signal.is_set()
