"""Waiting for the events a service publishes (its outbox relay publishes them later)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import nats
import sqlalchemy as sa
from google.protobuf.message import Message
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from crm.common.v1 import event_pb2
from crm_platform.events import Namespace, parse_event
from crm_platform.outbox import outbox
from crm_platform.testing.harness import eventually

if TYPE_CHECKING:
    from crm_platform.runtime import Runtime

P = TypeVar("P", bound=Message)


async def wait_for_event(
    nats_url: str,
    namespace: str,
    event_type: str,
    payload_type: type[P],
    match: Callable[[P], bool],
    *,
    within: float = 20.0,
) -> tuple[event_pb2.Event, P]:
    """Envelope and payload of the first ``event_type`` event whose payload ``match``es.

    Reads the run's stream from its start, so it may be called after the write that
    publishes the event; every event read must carry a ``payload_type``."""
    ns = Namespace(namespace)
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            ns.subject(event_type),
            stream=ns.stream_for(event_type),
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30,
            ),
        )
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except NatsTimeoutError:
                continue
            for msg in msgs:
                event = parse_event(msg.data)
                assert isinstance(event.payload, payload_type), event.envelope.type
                if match(event.payload):
                    return event.envelope, event.payload
    finally:
        await nc.close()
    raise AssertionError(f"no matching {event_type} event within {within}s")


async def wait_handled(
    publisher: Runtime, consumer: Runtime, durables: Sequence[tuple[str, str]], within: float = 20.0
) -> None:
    """Until ``publisher`` has published every event of its outbox and each of
    ``consumer``'s durable consumers, given as (durable name, event type), has nothing
    pending or unacked: the events written so far have all been handled (tests that change
    what a consumer would do next wait for this first)."""
    ns = Namespace(consumer.settings.nats_namespace)

    async def settled() -> None:
        async with publisher.db.read() as conn:
            pending = (
                await conn.execute(
                    sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
                )
            ).scalar_one()
        assert pending == 0, f"{pending} events not yet published"
        for durable, event_type in durables:
            info = await consumer.bus.js.consumer_info(ns.stream_for(event_type), durable)
            assert info.num_pending == 0 and info.num_ack_pending == 0, durable

    await eventually(settled, within=within)
