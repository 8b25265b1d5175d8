"""Transactional outbox: events are rows written in the use case's transaction; the relay
publishes them to JetStream with ``Nats-Msg-Id`` = event id and marks them after the PubAck.
Safe with several replicas: rows are claimed with ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from google.protobuf.message import Message
from opentelemetry.context import Context
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_platform import metrics
from crm_platform.db import OUTBOX_DIRTY, Database, platform_metadata
from crm_platform.events import CONTENT_TYPE, HEADER_EVENT_TYPE, build_event
from crm_platform.telemetry import inject_headers

log = logging.getLogger(__name__)

outbox = sa.Table(
    "crm_outbox",
    platform_metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("headers", JSONB, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_crm_outbox_pending", "seq", postgresql_where=sa.text("published_at IS NULL")),
)

_INSERT_EVENT = outbox.insert()  # built once: its cache key is computed once
# Claims the oldest pending rows another relay has not locked and marks them, in one
# statement; the mark only holds if the transaction commits after the PubAcks.
_CLAIM = sa.text(
    "WITH claimed AS (SELECT id FROM crm_outbox WHERE published_at IS NULL ORDER BY seq "
    "LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "UPDATE crm_outbox o SET published_at = now() FROM claimed WHERE o.id = claimed.id "
    "RETURNING o.seq, o.id, o.event_type, o.data, o.headers"
).columns(outbox.c.seq, outbox.c.id, outbox.c.event_type, outbox.c.data, outbox.c.headers)


# Items per batch event (a thousand leads is ~60 kB, well under NATS's 1 MB message limit):
# bulk paths publish one event naming many records, never one acked publish per record.
BATCH_EVENT_ITEMS = 1000


def batches(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``items`` in runs of at most BATCH_EVENT_ITEMS, one batch event each."""
    for start in range(0, len(items), BATCH_EVENT_ITEMS):
        yield items[start : start + BATCH_EVENT_ITEMS]


@dataclass(frozen=True)
class NewEvent:
    """An event to stage (``add_events``)."""

    event_type: str
    payload: Message
    tenant_id: uuid.UUID | str
    org_path: str
    correlation_id: str = ""
    causation_id: str = ""
    # The trace the event belongs to, when not the current one (a group commit writes the
    # events of several requests, each in its own trace).
    trace_context: Context | None = None


async def add_event(
    conn: AsyncConnection,
    *,
    event_type: str,
    payload: Message,
    tenant_id: uuid.UUID | str,
    org_path: str,
    producer: str,
    correlation_id: str = "",
    causation_id: str = "",
) -> uuid.UUID:
    """Stage an event in the caller's transaction. Returns the event id."""
    event = NewEvent(event_type, payload, tenant_id, org_path, correlation_id, causation_id)
    (event_id,) = await add_events(conn, [event], producer=producer)
    return event_id


async def add_events(
    conn: AsyncConnection, events: Sequence[NewEvent], *, producer: str
) -> list[uuid.UUID]:
    """Stage many events in the caller's transaction with one statement (SQLAlchemy sends a
    multi-row INSERT): a bulk path pays one round trip, not one per event."""
    if not events:
        return []
    ids: list[uuid.UUID] = []
    rows: list[dict[str, Any]] = []
    # One trace context for the transaction's events, unless an event names its own.
    headers_by_type: dict[str, MutableMapping[str, str]] = {}
    for event in events:
        envelope = build_event(
            event_type=event.event_type,
            payload=event.payload,
            tenant_id=event.tenant_id,
            org_path=event.org_path,
            producer=producer,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
        )
        own = event.trace_context is not None
        headers = None if own else headers_by_type.get(event.event_type)
        if headers is None:
            headers = inject_headers(
                {HEADER_EVENT_TYPE: event.event_type, "Content-Type": CONTENT_TYPE},
                event.trace_context,
            )
            if not own:
                headers_by_type[event.event_type] = headers
        event_id = uuid.UUID(envelope.id)
        ids.append(event_id)
        rows.append(
            {
                "id": event_id,
                "event_type": event.event_type,
                "data": envelope.SerializeToString(),
                "headers": headers,
            }
        )
    deferring: list[list[dict[str, Any]]] | None = conn.info.get(_DEFERRED)
    if deferring:
        deferring[-1].extend(rows)
    else:
        await _insert(conn, rows)
    return ids


async def _insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(_INSERT_EVENT, rows[0] if len(rows) == 1 else rows)
    conn.info[OUTBOX_DIRTY] = True


_DEFERRED = "crm_outbox_deferred"


@contextlib.asynccontextmanager
async def deferred(conn: AsyncConnection) -> AsyncIterator[None]:
    """Events staged on ``conn`` inside the block go to the outbox in one INSERT when the
    block ends normally (a step that stages three events pays one round trip, not three);
    nested, they join the enclosing block's. An exception discards the block's events: nest
    one inside each savepoint whose failure the code recovers from, so that the savepoint's
    events go with its rollback."""
    stack: list[list[dict[str, Any]]] = conn.info.setdefault(_DEFERRED, [])
    rows: list[dict[str, Any]] = []
    stack.append(rows)
    try:
        yield
    finally:
        stack.pop()
    if stack:
        stack[-1].extend(rows)
    elif rows:
        await _insert(conn, rows)


class Publisher(Protocol):
    """What the relay needs from the bus (crm_platform.bus.EventBus)."""

    async def publish(
        self, event_type: str, data: bytes, headers: dict[str, str], msg_id: str
    ) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.5,
        linger_seconds: float = 0.005,
        purge_after_seconds: float = 3600.0,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._linger = linger_seconds
        self._last_batch = 0.0
        self._purge_after = purge_after_seconds
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                published = await self.publish_batch()
                failures = 0
            except Exception:
                failures += 1
                metrics.EVENTS_PUBLISH_ERRORS.inc()
                log.warning("outbox publish failed; will retry", exc_info=failures == 1)
                await self._sleep(min(0.2 * 2**failures, 5.0))
                continue
            if published < self._batch_size:
                await self._wait_for_work()

    def stop(self) -> None:
        self._stopping.set()
        self._db.outbox_signal.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_work(self) -> None:
        signal = self._db.outbox_signal
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), self._poll)
        signal.clear()
        # Under load, batches start at most once per linger: a batch of many events costs
        # about what a batch of one does (a statement and a commit). An event after a quiet
        # spell goes out at once.
        wait = self._last_batch + self._linger - asyncio.get_running_loop().time()
        if wait > 0:
            await self._sleep(wait)

    async def publish_batch(self) -> int:
        """Claim up to one batch and mark it published (one statement), publish all of it
        concurrently, commit. If publishing fails the transaction rolls back and the rows
        stay pending."""
        started = asyncio.get_running_loop().time()
        async with self._db.engine.begin() as conn:
            rows = (await conn.execute(_CLAIM, {"limit": self._batch_size})).all()
            if not rows:
                return 0
            self._last_batch = started  # an empty look is no load: it holds nothing back
            await asyncio.gather(
                *(
                    self._publisher.publish(r.event_type, r.data, r.headers, str(r.id))
                    for r in sorted(rows, key=lambda r: r.seq)
                )
            )
        return len(rows)

    async def refresh_gauges(self) -> None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None)
                    )
                )
            ).one()
        metrics.OUTBOX_PENDING.set(row[0])
        oldest = row[1]
        metrics.OUTBOX_OLDEST_SECONDS.set(
            (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        )

    async def purge_published(self) -> int:
        async with self._db.unit_of_work() as conn:
            result = await conn.execute(
                outbox.delete().where(
                    outbox.c.published_at
                    < sa.func.now() - sa.text(f"interval '{int(self._purge_after)} seconds'")
                )
            )
        return result.rowcount or 0
