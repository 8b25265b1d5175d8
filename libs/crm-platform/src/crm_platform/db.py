"""Database access: one async engine per service, Core connections, one commit per use case."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import sqlalchemy as sa
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from crm_platform import telemetry
from crm_platform.errors import Unavailable
from crm_platform.metrics import POOL_EXHAUSTED

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Tables every service has (outbox, inbox). Services put their own tables in their own
# MetaData; migrations target both.
platform_metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

OUTBOX_DIRTY = "crm_outbox_dirty"


def asyncpg_url(url: str) -> str:
    """Accept the usual PostgreSQL URL spellings; the services speak asyncpg."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return f"postgresql+asyncpg://{rest}"
    return url


def new_metadata() -> sa.MetaData:
    return sa.MetaData(naming_convention=NAMING_CONVENTION)


def id_column(name: str = "id") -> sa.Column[Any]:
    return sa.Column(name, UUID(as_uuid=True), primary_key=True)


def owner_columns() -> list[sa.Column[Any]]:
    """Columns every org-owned record carries; visibility filters on them."""
    return [
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("owner_org_id", UUID(as_uuid=True), nullable=False),
        sa.Column("owner_org_path", sa.Text, nullable=False),
    ]


def owner_path_index(table_name: str) -> sa.Index:
    # text_pattern_ops makes `owner_org_path LIKE '/acme/east/%'` an index range scan.
    return sa.Index(
        f"ix_{table_name}_visibility",
        "tenant_id",
        "owner_org_path",
        postgresql_ops={"owner_org_path": "text_pattern_ops"},
    )


def timestamp_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column(
            "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def json_column(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, JSONB, nullable=nullable, server_default=sa.text("'{}'::jsonb"))


class Database:
    """Owns the engine and signals the outbox relay when a commit carried events."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        pool_timeout: float = 10.0,
        echo: bool = False,
        application_name: str = "",
    ) -> None:
        # application_name shows the service (and instance) in pg_stat_activity.
        self.application_name = application_name
        connect_args = {"server_settings": {"application_name": application_name}}
        self.engine: AsyncEngine = create_async_engine(
            url,
            connect_args=connect_args if application_name else {},
            # Every connection is kept once opened: overflow connections were closed on
            # return, so a service above pool_size concurrent statements opened and closed
            # one (a PostgreSQL backend fork) per use, which under load cost more than the
            # statements. A request beyond pool_size waits for a connection instead.
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout,
            # No pre-ping: it costs a round trip per checkout on the hot path. Broken
            # connections surface as errors and are discarded; recycle bounds their age.
            pool_recycle=1800,
            echo=echo,
        )
        # SQL spans join the request's trace, when spans are recorded at all: a SQL span is a
        # leaf (it propagates no trace context), so unrecorded its hooks were pure cost (~3 %
        # of a lead capture's CPU).
        if telemetry.recording():
            SQLAlchemyInstrumentor().instrument(engine=self.engine.sync_engine)
        # Reads run in autocommit: under READ COMMITTED every statement takes its own
        # snapshot inside a transaction too, so BEGIN and ROLLBACK bought nothing but two
        # round trips per read (18 % of a gRPC List's samples). Same pool as the writes.
        self._reader: AsyncEngine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.outbox_signal = asyncio.Event()

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: the use case's rows and its outbox events commit together."""
        conn = await self._checkout(self.engine)
        try:
            async with conn.begin():
                yield conn
            dirty = conn.info.get(OUTBOX_DIRTY, False)
        finally:
            # The flag lives on the pooled connection: a failed unit must not leave it for
            # the next one.
            conn.info.pop(OUTBOX_DIRTY, None)
            await conn.close()
        if dirty:
            self.outbox_signal.set()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Statements without a transaction (no locks, no writes): each sees the data as
        committed when it starts, as it would in a READ COMMITTED transaction."""
        conn = await self._checkout(self._reader)
        try:
            yield conn
        finally:
            await conn.close()

    async def _checkout(self, engine: AsyncEngine) -> AsyncConnection:
        """A pooled connection; when none frees up within the pool timeout the service is
        saturated, which callers see as 503 / UNAVAILABLE (retry later), not a 500."""
        try:
            return await engine.connect()
        except sa.exc.TimeoutError as exc:
            POOL_EXHAUSTED.inc()
            raise Unavailable(
                "the service is saturated (no database connection free); retry shortly",
                reason="DB_POOL_EXHAUSTED",
            ) from exc

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def terminate_sessions(self) -> None:
        """End every server session of this instance, as PostgreSQL does when a process dies:
        open transactions roll back and their locks go (used to simulate crashes). Uses its
        own connection: the pool may be exhausted by the very work being killed."""
        if not self.application_name:
            return
        url = self.engine.url.set(drivername="postgresql")
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                self.application_name,
            )
        finally:
            await conn.close()
