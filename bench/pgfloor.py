"""The raw database floor of a write path: the same transaction shape issued with asyncpg
directly (no HTTP, no validation, no SQLAlchemy) from N concurrent connections, closed loop.
Whatever a service reaches on that path is a fraction of this."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.load import percentile

# (connection, worker index, sequence number within the worker) -> one transaction's body;
# the caller wraps it in BEGIN/COMMIT.
TxBody = Callable[[Any, int, int], Awaitable[None]]


@dataclass
class FloorResult:
    connections: int
    seconds: float
    transactions: int
    tps: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "seconds": self.seconds,
            "transactions": self.transactions,
            "tps": round(self.tps, 1),
            "latency_ms": {"p50": round(self.p50_ms, 3), "p99": round(self.p99_ms, 3)},
            "errors": self.errors,
            "first_error": self.first_error,
        }


async def _floor(
    dsn: str, body: TxBody, connections: int, seconds: float, warmup: float
) -> FloorResult:
    import asyncpg

    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    latencies: list[float] = []
    errors: list[str] = []
    start = time.monotonic() + warmup
    end = start + seconds

    async def worker(index: int, conn: Any) -> None:
        n = 0
        while True:
            n += 1
            t0 = time.monotonic()
            if t0 >= end:
                return
            try:
                async with conn.transaction():
                    await body(conn, index, n)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            t1 = time.monotonic()
            if t0 >= start and t1 <= end:
                latencies.append(t1 - t0)

    try:
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    ms = sorted(v * 1000 for v in latencies)
    return FloorResult(
        connections=connections,
        seconds=seconds,
        transactions=len(ms),
        tps=len(ms) / seconds,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        errors=len(errors),
        first_error=errors[0] if errors else "",
    )


def measure_tx_floor(
    dsn: str, body: TxBody, *, connections: int, seconds: float, warmup: float = 1.0
) -> FloorResult:
    """Run on uvloop when installed, like the services."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_floor(dsn, body, connections, seconds, warmup))
