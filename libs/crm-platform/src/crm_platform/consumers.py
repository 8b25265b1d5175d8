"""Durable pull consumers with an inbox: each event's effect and its inbox row commit in one
transaction, then the message is acked. Redelivered events are recognised and skipped;
poison messages and those past ``max_deliver`` go to the dead-letter subject."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats.errors
import sqlalchemy as sa
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_platform import metrics
from crm_platform.bus import EventBus
from crm_platform.db import Database, platform_metadata
from crm_platform.events import HEADER_DLQ_REASON, PoisonMessage, ReceivedEvent, parse_event
from crm_platform.telemetry import extract_context

log = logging.getLogger(__name__)
tracer = trace.get_tracer("crm_platform.consumers")

inbox = sa.Table(
    "crm_inbox",
    platform_metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

EventHandler = Callable[[AsyncConnection, ReceivedEvent], Awaitable[None]]
BatchHandler = Callable[[AsyncConnection, Sequence[ReceivedEvent]], Awaitable[None]]
# Delay before redelivery after a transient failure, by delivery attempt.
REDELIVERY_BACKOFF_SECONDS = (1, 5, 30, 120, 600)


# For handlers safe in any order (they lock what they change): saga steps and the like.
# Their time is mostly statement round trips, so more in flight keeps the process busy:
# 3,000 conversions went from 67-70/s with 8 to 77-89/s with 16. Keep it under the
# connection pool (DB_POOL_SIZE, 20): a handler beyond it waits for a connection.
ORDER_FREE_CONCURRENCY = 16


@dataclass(frozen=True)
class ConsumerSpec:
    """``name`` is the durable consumer name (``<service>-<purpose>``, no dots)."""

    name: str
    event_type: str
    handler: EventHandler
    # Messages of one fetch handled at once. 1 keeps the stream's order (replicas of
    # directory data need it); handlers safe in any order (each locks what it changes,
    # e.g. saga steps) take more, so one slow transaction does not hold up the rest.
    concurrency: int = 1
    # Set for handlers that do their work set-based across events: a fetch's new events are
    # then handled in one transaction (one inbox statement, one handler call, in stream
    # order) instead of one each. ``handler`` still takes an event alone when that
    # transaction fails, so one bad event cannot hold the others back. See ``batched``.
    batch_handler: BatchHandler | None = None

    @classmethod
    def batched(cls, *, name: str, event_type: str, handler: BatchHandler) -> ConsumerSpec:
        async def one(conn: AsyncConnection, event: ReceivedEvent) -> None:
            await handler(conn, [event])

        return cls(name=name, event_type=event_type, handler=one, batch_handler=handler)


_RECORD_MANY = sa.text(
    "INSERT INTO crm_inbox (consumer, event_id) SELECT :consumer, unnest(:ids) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
).bindparams(sa.bindparam("ids", type_=sa.ARRAY(UUID(as_uuid=True))))


async def record_new(
    conn: AsyncConnection, consumer: str, events: Sequence[ReceivedEvent]
) -> list[ReceivedEvent]:
    """Insert the inbox rows of ``events`` in one statement; returns, in order, the events
    this consumer had not processed before (an event twice in ``events`` counts once)."""
    ids = list(dict.fromkeys(event.id for event in events))
    fresh = {row[0] for row in await conn.execute(_RECORD_MANY, {"consumer": consumer, "ids": ids})}
    new: list[ReceivedEvent] = []
    for event in events:
        if event.id in fresh:
            fresh.discard(event.id)
            new.append(event)
    return new


async def record_once(conn: AsyncConnection, consumer: str, event: ReceivedEvent) -> bool:
    """Insert the inbox row; False if this consumer already processed the event."""
    return bool(await record_new(conn, consumer, [event]))


class ConsumerRunner:
    def __init__(
        self,
        spec: ConsumerSpec,
        *,
        db: Database,
        bus: EventBus,
        batch_size: int = 100,
        max_deliver: int = 8,
        ack_wait: float = 30.0,
        service: str = "",
    ) -> None:
        self.spec = spec
        self._service = service
        self._db = db
        self._bus = bus
        self._batch = batch_size
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._stopping = asyncio.Event()
        self._sub: JetStreamContext.PullSubscription | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def subscribe(self) -> None:
        """Declare the durable consumer (idempotent); done before the service reports ready."""
        self._sub = await self._bus.pull_subscription(
            durable=self.spec.name,
            event_type=self.spec.event_type,
            max_deliver=self._max_deliver,
            ack_wait=self._ack_wait,
        )

    async def run(self) -> None:
        if self._sub is None:
            await self.subscribe()
        sub = self._sub
        assert sub is not None
        concurrency = self.spec.concurrency
        slots = asyncio.Semaphore(concurrency) if concurrency > 1 else None
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(self._batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error:
                # NATS is away; the client reconnects by itself.
                await asyncio.sleep(0.5)
                continue
            if self.spec.batch_handler is not None and len(msgs) > 1:
                await self.handle_batch(msgs)
            elif slots is None:
                for msg in msgs:
                    await self.handle(msg)
            else:
                await asyncio.gather(*(self._handle_in(slots, msg) for msg in msgs))

    async def _handle_in(self, slots: asyncio.Semaphore, msg: Msg) -> None:
        async with slots:
            await self.handle(msg)

    async def handle(self, msg: Msg) -> None:
        subject = self.spec.event_type
        started = time.perf_counter()
        with tracer.start_as_current_span(
            f"{subject} process",
            context=extract_context(msg.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.spec.name,
                # The resource's service.name names the process; in-process test suites
                # run several services under one resource, so the span names its own.
                "crm.service": self._service,
            },
        ):
            outcome = await self._process(msg)
        metrics.EVENTS_CONSUMED.labels(subject, self.spec.name, outcome).inc()
        metrics.EVENT_HANDLING.labels(subject, self.spec.name).observe(
            time.perf_counter() - started
        )

    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        """A fetch's messages in one transaction (``ConsumerSpec.batch_handler``); if it
        fails, each message is handled alone, with the usual retry and dead-lettering."""
        handler = self.spec.batch_handler
        assert handler is not None
        subject = self.spec.event_type
        started = time.perf_counter()
        parsed: list[tuple[Msg, ReceivedEvent]] = []
        for msg in msgs:
            try:
                parsed.append((msg, parse_event(msg.data)))
            except PoisonMessage as exc:
                await self._dead_letter(msg, f"poison: {exc}")
                metrics.EVENTS_CONSUMED.labels(subject, self.spec.name, "dlq").inc()
        # One span for the batch, linked to every message's producer span.
        links = [
            trace.Link(context)
            for msg, _ in parsed
            if (
                context := trace.get_current_span(extract_context(msg.headers)).get_span_context()
            ).is_valid
        ]
        with tracer.start_as_current_span(
            f"{subject} process",
            links=links,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subject,
                "messaging.consumer.group.name": self.spec.name,
                "messaging.batch.message_count": len(parsed),
                "crm.service": self._service,
            },
        ):
            try:
                async with self._db.unit_of_work() as conn:
                    fresh = await record_new(conn, self.spec.name, [e for _, e in parsed])
                    if fresh:
                        await handler(conn, fresh)
            except Exception:
                log.info(
                    "batch of %s failed; handling its events one by one", subject, exc_info=True
                )
                for msg, _ in parsed:
                    await self.handle(msg)
                return
        elapsed = time.perf_counter() - started
        fresh_ids = {event.id for event in fresh}
        for msg, event in parsed:
            await self._settle(msg.ack())
            outcome = "ack" if event.id in fresh_ids else "duplicate"
            metrics.EVENTS_CONSUMED.labels(subject, self.spec.name, outcome).inc()
            # Each event waited for the whole batch: that is its handling latency.
            metrics.EVENT_HANDLING.labels(subject, self.spec.name).observe(elapsed)

    async def _process(self, msg: Msg) -> str:
        try:
            event = parse_event(msg.data)
            async with self._db.unit_of_work() as conn:
                if not await record_once(conn, self.spec.name, event):
                    duplicate = True
                else:
                    duplicate = False
                    trace.get_current_span().set_attribute("crm.tenant_id", str(event.tenant_id))
                    await self.spec.handler(conn, event)
        except PoisonMessage as exc:
            await self._dead_letter(msg, f"poison: {exc}")
            return "dlq"
        except Exception as exc:
            delivered = msg.metadata.num_delivered
            if delivered >= self._max_deliver:
                await self._dead_letter(msg, f"failed {delivered} times: {exc!r}")
                return "dlq"
            log.warning(
                "handler %s failed (attempt %d), will retry",
                self.spec.name,
                delivered,
                exc_info=True,
            )
            delay = REDELIVERY_BACKOFF_SECONDS[min(delivered, len(REDELIVERY_BACKOFF_SECONDS)) - 1]
            await self._settle(msg.nak(delay=delay))
            return "nak"
        await self._settle(msg.ack())
        return "duplicate" if duplicate else "ack"

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        metrics.EVENTS_DEAD_LETTERED.labels(self.spec.name).inc()
        log.error("dead-lettering message on %s: %s", msg.subject, reason)
        meta = msg.metadata
        headers = dict(msg.headers or {})
        headers[HEADER_DLQ_REASON] = reason[:500]
        try:
            await self._bus.publish_dlq(
                self.spec.event_type,
                msg.data,
                headers,
                msg_id=f"{self.spec.name}:{meta.stream}:{meta.sequence.stream}",
            )
        except nats.errors.Error:
            # Could not park it: leave it unacked so it is redelivered rather than lost.
            return
        await self._settle(msg.term())

    @staticmethod
    async def _settle(op: Awaitable[None]) -> None:
        # An ack lost to a NATS outage means a redelivery, which the inbox absorbs.
        try:
            await op
        except nats.errors.Error:
            log.info("could not settle message; it will be redelivered")
