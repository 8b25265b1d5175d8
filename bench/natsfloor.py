"""The bare JetStream floor of an event hop: nats-py against the same server, the same
calls the platform makes (``js.publish`` awaiting its ack, a durable pull consumer
``fetch(100, timeout=1.0)`` acking each message), on a file-storage stream of the
scenario's namespace (``<NS>_BENCHPROBE``, removed with the namespace's streams).

- round trip: one message at a time, from the publish call to the consumer holding it
  (what one saga hop costs the bus, with no service or database work);
- rate: ``in_flight`` concurrent publishers, the consumer fetching and acking; messages
  consumed per second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.load import percentile

FETCH_BATCH = 100  # crm_platform.consumers default
PAYLOAD = bytes(400)  # about an envelope with a conversion command


@dataclass
class NatsFloor:
    rtt_samples: int
    rtt_p50_ms: float
    rtt_p99_ms: float
    in_flight: int
    rate: float
    consumed: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "round_trip": {
                "samples": self.rtt_samples,
                "p50_ms": round(self.rtt_p50_ms, 3),
                "p99_ms": round(self.rtt_p99_ms, 3),
            },
            "rate": {
                "in_flight": self.in_flight,
                "seconds": self.seconds,
                "consumed": self.consumed,
                "msgs_per_s": round(self.rate, 1),
            },
        }


async def _probe(url: str, namespace: str, seconds: float, in_flight: int) -> NatsFloor:
    import nats
    from nats.js.api import StorageType

    stream = f"{namespace.upper()}_BENCHPROBE"
    subject = f"{namespace}.benchprobe.msg"
    pub = await nats.connect(url)
    sub_nc = await nats.connect(url)
    try:
        js = pub.jetstream(timeout=5)
        await js.add_stream(name=stream, subjects=[subject], storage=StorageType.FILE)
        sub = await sub_nc.jetstream(timeout=5).pull_subscribe(
            subject, durable="benchprobe", stream=stream
        )
        received: dict[str, float] = {}
        arrived = asyncio.Event()
        consumed = 0
        stop = asyncio.Event()

        async def consume() -> None:
            nonlocal consumed
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                now = time.monotonic()
                for msg in msgs:
                    key = (msg.headers or {}).get("k", "")
                    if key:
                        received[key] = now
                        arrived.set()
                    await msg.ack()
                    consumed += 1

        consumer = asyncio.create_task(consume())
        # Round trip, one at a time.
        rtts: list[float] = []
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            key = f"r{n}"
            arrived.clear()
            t0 = time.monotonic()
            await js.publish(subject, PAYLOAD, headers={"k": key, "Nats-Msg-Id": key})
            while key not in received:
                await asyncio.wait_for(arrived.wait(), 5)
                arrived.clear()
            rtts.append((received.pop(key) - t0) * 1000)
        # Rate: in_flight publishers, closed loop.
        base = consumed
        t0 = time.monotonic()
        end = t0 + seconds

        async def publisher(w: int) -> None:
            i = 0
            while time.monotonic() < end:
                i += 1
                await js.publish(subject, PAYLOAD, headers={"Nats-Msg-Id": f"p{w}-{i}"})

        await asyncio.gather(*(publisher(w) for w in range(in_flight)))
        elapsed = time.monotonic() - t0
        done = consumed - base
        stop.set()
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
    finally:
        await sub_nc.close()
        await pub.close()
    rtts.sort()
    return NatsFloor(
        rtt_samples=len(rtts),
        rtt_p50_ms=percentile(rtts, 50),
        rtt_p99_ms=percentile(rtts, 99),
        in_flight=in_flight,
        rate=done / elapsed if elapsed else 0.0,
        consumed=done,
        seconds=round(elapsed, 3),
    )


def measure_jetstream_floor(
    url: str, namespace: str, *, seconds: float, in_flight: int = 64
) -> NatsFloor:
    """Run on uvloop when installed, like the services."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_probe(url, namespace, seconds, in_flight))
