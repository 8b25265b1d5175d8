"""crm_platform.records against real PostgreSQL, on a throwaway org-owned table: the
idempotent create (also when two requests race), visibility of one row, and keyset pages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_platform import records
from crm_platform.auth import Principal
from crm_platform.db import Database, id_column, new_metadata, owner_columns, owner_path_index
from crm_platform.errors import NotFound
from crm_platform.ids import new_id
from crm_platform.migrations import ensure_database
from crm_platform.pagination import PageRequest, decode_token, page_of
from crm_platform.testing.harness import ServiceStarter

metadata = new_metadata()
things = sa.Table(
    "things",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    sa.UniqueConstraint("tenant_id", "request_id"),
    owner_path_index("things"),
)


@pytest.fixture(scope="module")
async def db(starter: ServiceStarter) -> AsyncIterator[Database]:
    db_url = starter.db_url("recordstest")
    await ensure_database(db_url)
    database = Database(db_url, pool_size=4)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def principal(org_path: str, tenant_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        tenant_id=tenant_id or uuid.uuid4(),
        subject="tester",
        org_unit_id=uuid.uuid4(),
        org_path=org_path,
        roles=frozenset({"rep"}),
    )


def thing(owner: Principal, name: str) -> dict[str, Any]:
    return {"id": new_id(), **records.owned_by(owner), "name": name}


async def insert(
    db: Database, owner: Principal, name: str, request_id: uuid.UUID | None = None
) -> tuple[Any, bool]:
    async with db.unit_of_work() as conn:
        return await records.insert_once(conn, things, thing(owner, name), request_id=request_id)


async def count(db: Database, tenant_id: uuid.UUID) -> int:
    async with db.read() as conn:
        stmt = sa.select(sa.func.count()).where(things.c.tenant_id == tenant_id)
        return int((await conn.execute(stmt)).scalar_one())


async def test_insert_once_returns_the_first_row_on_a_repeated_request_id(db: Database) -> None:
    owner = principal("/acme/")
    request_id = uuid.uuid4()
    first, created = await insert(db, owner, "first", request_id)
    assert created
    assert (first.name, first.tenant_id, first.owner_org_path, first.request_id) == (
        "first",
        owner.tenant_id,
        "/acme/",
        request_id,
    )
    again, created_again = await insert(db, owner, "second", request_id)
    assert not created_again
    assert again == first
    assert await count(db, owner.tenant_id) == 1
    # The key is per tenant: another tenant's same request_id is a new row.
    _, created_elsewhere = await insert(db, principal("/acme/"), "other tenant", request_id)
    assert created_elsewhere


async def test_insert_once_without_request_id_always_creates(db: Database) -> None:
    owner = principal("/acme/")
    a, created_a = await insert(db, owner, "a")
    b, created_b = await insert(db, owner, "b")
    assert created_a and created_b
    assert a.id != b.id
    assert await count(db, owner.tenant_id) == 2


async def test_racing_inserts_of_one_request_id_create_one_row(db: Database) -> None:
    """Two transactions on two connections: one inserts, the other waits on the unique index
    and then gets the committed row with created=False."""
    for _ in range(10):
        owner = principal("/acme/")
        request_id = uuid.uuid4()
        (row_a, created_a), (row_b, created_b) = await asyncio.gather(
            insert(db, owner, "a", request_id), insert(db, owner, "b", request_id)
        )
        assert sorted([created_a, created_b]) == [False, True]
        assert row_a == row_b
        assert await count(db, owner.tenant_id) == 1


async def test_get_visible_answers_not_found_outside_the_subtree(db: Database) -> None:
    owner = principal("/acme/east/")
    row, _ = await insert(db, owner, "east thing")
    async with db.read() as conn:
        for viewer in (owner, principal("/acme/", owner.tenant_id)):
            seen = await records.get_visible(conn, things, viewer, row.id, kind="thing")
            assert seen == row
        missing = new_id()
        for viewer, record_id in (
            (principal("/acme/east/d1/", owner.tenant_id), row.id),  # below the owner
            (principal("/acme/west/", owner.tenant_id), row.id),  # a sibling subtree
            (principal("/acme/east/"), row.id),  # same path, another tenant
            (principal("/acme_", owner.tenant_id), row.id),  # LIKE wildcard is escaped
            (owner, missing),  # no such row: the same answer
        ):
            with pytest.raises(NotFound) as err:
                await records.get_visible(conn, things, viewer, record_id, kind="thing")
            assert err.value.reason == "THING_NOT_FOUND"
            assert err.value.metadata == {"thing": str(record_id)}
            assert err.value.message == f"thing {record_id} not found"


async def test_visible_page_returns_each_visible_row_once_newest_first(db: Database) -> None:
    owner = principal("/acme/east/")
    visible = [(await insert(db, owner, f"east {i}"))[0].id for i in range(7)]
    visible.append((await insert(db, principal("/acme/east/d1/", owner.tenant_id), "d1"))[0].id)
    await insert(db, principal("/acme/west/", owner.tenant_id), "west")
    await insert(db, principal("/acme/east/"), "other tenant")

    seen: list[uuid.UUID] = []
    page = PageRequest(size=3, after=None)
    async with db.read() as conn:
        for _ in range(5):  # 8 visible rows in pages of 3: three pages
            rows = await records.visible_page(conn, things, owner, page)
            assert len(rows) <= page.size + 1
            items, token = page_of(rows, page)
            seen.extend(r.id for r in items)
            if not token:
                break
            page = PageRequest(size=3, after=decode_token(token))
        else:
            pytest.fail(f"paging did not end; saw {len(seen)} rows")
    assert seen == sorted(visible, reverse=True)
    assert seen[0] == visible[-1]  # UUIDv7: the last created comes first
