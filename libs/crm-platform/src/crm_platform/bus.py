"""NATS JetStream connection: stream declarations, publishing, durable pull consumers."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from crm_platform import metrics
from crm_platform.events import (
    DLQ_DOMAIN,
    DLQ_MAX_AGE_SECONDS,
    DLQ_STREAM,
    DUPLICATE_WINDOW_SECONDS,
    STREAM_MAX_AGE_SECONDS,
    STREAMS,
    Namespace,
)

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self, url: str, namespace: Namespace, *, name: str) -> None:
        self.url = url
        self.ns = namespace
        self.name = name
        self.nc: NATS | None = None
        self._js: JetStreamContext | None = None

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("EventBus.connect() was not awaited")
        return self._js

    async def connect(self) -> None:
        async def on_disconnect() -> None:
            log.warning("NATS disconnected")

        async def on_reconnect() -> None:
            log.info("NATS reconnected")

        async def on_error(exc: Exception) -> None:
            log.debug("NATS error: %s", exc)

        # Reconnect forever: the outbox keeps events safe while NATS is away.
        self.nc = await nats.connect(
            self.url,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
        )
        self._js = self.nc.jetstream(timeout=5)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def close(self) -> None:
        # Consumers have stopped fetching by now; unacked messages are redelivered to
        # another replica, so a plain close is safe (drain would wait out its 30 s timeout
        # on idle pull subscriptions).
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def ensure_streams(self) -> None:
        """Idempotently declare every stream of the suite (any service may start first)."""
        configs = [
            StreamConfig(
                name=self.ns.stream(stream),
                subjects=self.ns.stream_subjects(domain),
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=STREAM_MAX_AGE_SECONDS,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                discard=DiscardPolicy.OLD,
            )
            for domain, stream in STREAMS.items()
        ]
        configs.append(
            StreamConfig(
                name=self.ns.stream(DLQ_STREAM),
                subjects=self.ns.stream_subjects(DLQ_DOMAIN),
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=DLQ_MAX_AGE_SECONDS,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            )
        )
        for config in configs:
            try:
                await self.js.add_stream(config)
            except BadRequestError:
                # Exists with another config (e.g. an older max_age): bring it up to date.
                await self.js.update_stream(config)

    async def publish(
        self, event_type: str, data: bytes, headers: dict[str, str], msg_id: str
    ) -> None:
        ack = await self.js.publish(
            self.ns.subject(event_type),
            data,
            headers={**headers, "Nats-Msg-Id": msg_id},
        )
        if not ack.duplicate:
            metrics.EVENTS_PUBLISHED.labels(event_type).inc()

    async def publish_dlq(
        self, event_type: str, data: bytes, headers: dict[str, str], msg_id: str
    ) -> None:
        await self.js.publish(
            self.ns.dlq_subject(event_type), data, headers={**headers, "Nats-Msg-Id": msg_id}
        )

    async def pull_subscription(
        self, *, durable: str, event_type: str, max_deliver: int, ack_wait: float
    ) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=durable,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=1000,
            filter_subject=self.ns.subject(event_type),
        )
        return await self.js.pull_subscribe(
            self.ns.subject(event_type),
            durable=durable,
            stream=self.ns.stream_for(event_type),
            config=config,
        )

    async def refresh_consumer_gauges(self, durables: list[tuple[str, str]]) -> None:
        for durable, event_type in durables:
            try:
                info = await self.js.consumer_info(self.ns.stream_for(event_type), durable)
            except (TimeoutError, NotFoundError, nats.errors.Error):
                continue
            metrics.CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
            metrics.CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)
