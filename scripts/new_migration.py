"""Autogenerate an Alembic revision for one service: python scripts/new_migration.py leads "msg".

Migrates a scratch database to head, diffs it against the models, writes the revision,
and drops the scratch database. Uses CRM_DEV_PG_URL (default: the local server)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg
from sqlalchemy.engine import make_url

sys.path.insert(0, os.path.dirname(__file__))
from suite import definition

from crm_platform.migrations import autogenerate


async def run(service: str, message: str) -> None:
    base = os.environ.get("CRM_DEV_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    name = f"crm_scratch_{uuid.uuid4().hex[:8]}"
    url = make_url(base).set(database=name)
    d = definition(service)
    try:
        await autogenerate(d.migrations, url.render_as_string(hide_password=False), message)
    finally:
        admin = url.set(drivername="postgresql", database="postgres")
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
