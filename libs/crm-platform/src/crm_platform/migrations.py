"""Alembic per service: each service keeps its versions next to its code; this module runs
them (CLI, `make up`, Helm Job, tests) and creates the service's database when missing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine


def alembic_config(script_location: Path, db_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    return cfg


async def ensure_database(db_url: str) -> None:
    """CREATE DATABASE for the URL's database if it does not exist (needs CREATEDB)."""
    url = make_url(db_url)
    name = url.database
    admin = url.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _with_connection(
    script_location: Path, db_url: str, op: Callable[[Config], object]
) -> None:
    await ensure_database(db_url)
    cfg = alembic_config(script_location, db_url)
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:

            def _run(sync_conn: Connection) -> None:
                cfg.attributes["connection"] = sync_conn
                op(cfg)

            await conn.run_sync(_run)
    finally:
        await engine.dispose()


async def upgrade(script_location: Path, db_url: str, revision: str = "heads") -> None:
    await _with_connection(script_location, db_url, lambda cfg: command.upgrade(cfg, revision))


async def autogenerate(script_location: Path, db_url: str, message: str) -> None:
    """Write a new revision from the difference between the models and a migrated database."""
    await upgrade(script_location, db_url)
    # Sequential ids (0001, 0002, ...) keep the versions folder readable in order.
    rev_id = f"{len(list((script_location / 'versions').glob('[0-9]*.py'))) + 1:04d}"
    await _with_connection(
        script_location,
        db_url,
        lambda cfg: command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id),
    )


def run_env(target_metadata: Sequence[sa.MetaData]) -> None:
    """Body of every service's migrations/env.py."""
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations via `crm-<service> migrate` (crm_platform.migrations)")
    _configure_and_run(connection, target_metadata)


def _configure_and_run(connection: Connection, target_metadata: Sequence[sa.MetaData]) -> None:
    context.configure(
        connection=connection,
        target_metadata=list(target_metadata),
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
