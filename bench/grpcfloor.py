"""The bare gRPC floor of one fan-out call: an empty unary call (``grpc.health.v1.Health/
Check``, which the platform's interceptor lets through untouched) to a service process,
from a separate process with a plain ``grpc.aio`` channel, paced open loop like the view.

What it costs that process and the caller in CPU per call is the part of a 360 view's cost
that no handler, query or mapping change can remove: the grpc.aio runtime's own work per
call on each side. The caller's CPU is measured in the generator process, the server's by
the scenario (``bench.procstats.CpuWindow`` around ``run``)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

from bench.load import percentile


@dataclass
class GrpcFloor:
    target: str
    rate: float
    seconds: float
    calls: int
    errors: int
    p50_ms: float
    p99_ms: float
    client_cpu_us_per_call: float

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "rate": self.rate,
            "seconds": self.seconds,
            "calls": self.calls,
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "client_cpu_us_per_call": round(self.client_cpu_us_per_call, 1),
        }


async def _paced(target: str, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest()
        await check(request, timeout=5)  # connected before the clock starts
        latencies: list[float] = []
        errors = 0

        async def one(due: float, counted: bool) -> None:
            nonlocal errors
            try:
                await check(request, timeout=5)
            except grpc.aio.AioRpcError:
                errors += counted
                return
            if counted:
                latencies.append((time.monotonic() - due) * 1000)

        start = time.monotonic()
        total = int((warmup + seconds) * rate)
        calls: list[asyncio.Task[None]] = []
        cpu0 = 0.0
        for i in range(total):
            due = start + i / rate
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            counted = i >= warmup * rate
            if counted and not cpu0:
                cpu0 = time.process_time()
            calls.append(asyncio.create_task(one(due, counted)))
        await asyncio.gather(*calls)
        cpu = time.process_time() - cpu0
    latencies.sort()
    counted_calls = total - int(warmup * rate)
    return {
        "calls": counted_calls,
        "errors": errors,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "client_cpu_us_per_call": cpu / max(1, counted_calls) * 1e6,
    }


def _child(target: str, rate: float, seconds: float, warmup: float, out: Any) -> None:
    import uvloop

    out.send(uvloop.run(_paced(target, rate, seconds, warmup)))


def run(target: str, *, rate: float, seconds: float, warmup: float = 1.0) -> GrpcFloor:
    """Empty calls to ``target`` at ``rate`` per second for ``seconds`` (after ``warmup``),
    from a spawned process."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(target, rate, seconds, warmup, send), daemon=True)
    proc.start()
    try:
        if not receive.poll(warmup + seconds + 60):
            raise RuntimeError("the gRPC floor generator did not report")
        report: dict[str, Any] = receive.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return GrpcFloor(target=target, rate=rate, seconds=seconds, **report)
