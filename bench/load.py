"""HTTP load generation, always outside the server's process.

Two generators with the same closed-loop model (N connections, each sends its next request
when the previous answer arrives) and the same request templates:

- ``wrk`` (Debian's package): C, cheap on CPU; bodies come from ``bench/wrk_load.lua``.
- ``python``: the fallback when wrk is missing. Several ``multiprocessing`` worker processes,
  each driving its share of the connections with a minimal HTTP/1.1 keep-alive client on
  asyncio (uvloop when installed). httpx tops out near 800 req/s per process here
  (TOOLCHAIN.md) and would measure itself, not the server; this client costs a few tens of
  microseconds per request.

Body templates use placeholders filled per request: ``{{run}}`` (run tag), ``{{w}}`` (worker:
wrk thread or Python process), ``{{n}}`` (sequence number within the worker) and ``{{d8}}``
(8 digits unique per worker and sequence) and ``{{p}}`` (9 in a separate warm-up run, else 8),
so every request can carry a unique email/phone.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import time
from array import array
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WRK_SCRIPT = Path(__file__).with_name("wrk_load.lua")
MAX_SAMPLES = 5
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class LoadSpec:
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body_template: str = ""  # "" sends no body
    run_tag: str = "run"


@dataclass(frozen=True)
class LoadOptions:
    connections: int = 8
    seconds: float = 10.0
    warmup: float = 2.0
    generator: str = "auto"  # auto | wrk | python
    wrk_threads: int = 1
    python_procs: int = 2


@dataclass
class LoadResult:
    generator: str
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    socket_errors: int
    samples: list[str]

    @property
    def non_2xx(self) -> int:
        return sum(count for code, count in self.statuses.items() if not 200 <= code <= 299)

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "connections": self.connections,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "latency_ms": {
                "p50": round(self.p50_ms, 3),
                "p90": round(self.p90_ms, 3),
                "p99": round(self.p99_ms, 3),
                "max": round(self.max_ms, 3),
            },
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "error_samples": self.samples,
        }


def pick_generator(requested: str) -> str:
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if requested not in ("wrk", "python"):
        raise ValueError(f"BENCH_LOADGEN must be auto, wrk or python, not {requested!r}")
    if requested == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("BENCH_LOADGEN=wrk but wrk is not on PATH (apt-get install -y wrk)")
    return requested


def describe_generator(options: LoadOptions) -> str:
    gen = pick_generator(options.generator)
    if gen == "wrk":
        threads = min(options.wrk_threads, options.connections)
        return f"wrk ({threads} thread(s), {options.connections} connections)"
    procs = min(options.python_procs, options.connections)
    return f"python asyncio client ({procs} processes, {options.connections} connections)"


def run_load(spec: LoadSpec, options: LoadOptions) -> LoadResult:
    """Warm up, then measure ``options.seconds`` of closed-loop load."""
    if pick_generator(options.generator) == "wrk":
        return _run_wrk(spec, options)
    return _run_python(spec, options)


# --- wrk ------------------------------------------------------------------------------


def _wrk_once(spec: LoadSpec, options: LoadOptions, seconds: int, run_tag: str) -> LoadResult:
    wrk = shutil.which("wrk")
    assert wrk is not None
    threads = max(1, min(options.wrk_threads, options.connections))
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{options.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        spec.url,
        "--",
        spec.method,
        run_tag,
    ]
    env = dict(os.environ)
    env["BENCH_WRK_BODY"] = spec.body_template
    env["BENCH_WRK_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in spec.headers.items())
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=False, env=env
    )
    summary: dict[str, Any] | None = None
    samples: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            summary = json.loads(line[len("BENCH_JSON ") :])
        elif line.startswith("BENCH_SAMPLE ") and len(samples) < MAX_SAMPLES:
            samples.append(line[len("BENCH_SAMPLE ") :])
    if proc.returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    errors = summary["errors"]
    lat = summary["latency_us"]
    duration = summary["duration_us"] / 1e6
    return LoadResult(
        generator="wrk",
        connections=options.connections,
        seconds=duration,
        requests=summary["requests"],
        rps=summary["requests"] / duration if duration else 0.0,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        statuses={int(k): int(v) for k, v in summary["statuses"].items()},
        # "status" errors are answers >= 400, already counted in statuses.
        socket_errors=sum(int(errors[k]) for k in ("connect", "read", "write", "timeout")),
        samples=samples,
    )


def _run_wrk(spec: LoadSpec, options: LoadOptions) -> LoadResult:
    if options.warmup > 0:
        _wrk_once(spec, options, max(1, round(options.warmup)), spec.run_tag + "w")
    return _wrk_once(spec, options, max(1, round(options.seconds)), spec.run_tag)


# --- Python fallback ------------------------------------------------------------------


class BodyTemplate:
    """A body template split once into literals and placeholders."""

    def __init__(self, template: str, run_tag: str, worker: int) -> None:
        self.parts = PLACEHOLDER.split(template)
        self.run_tag = run_tag
        self.worker = worker
        self.n = 0

    def next(self) -> bytes:
        self.n += 1
        values = {
            "run": self.run_tag,
            "w": str(self.worker),
            "n": str(self.n),
            "d8": f"{(self.worker % 10) * 10_000_000 + self.n % 10_000_000:08d}",
            "p": "9" if self.run_tag.endswith("w") else "8",
        }
        out = [
            part if i % 2 == 0 else values.get(part, "{{" + part + "}}")
            for i, part in enumerate(self.parts)
        ]
        return "".join(out).encode()


@dataclass
class _WorkerStats:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    samples: list[str] = field(default_factory=list)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            close = b"close" in value.lower()
    if not chunked:
        return status, await reader.readexactly(length) if length else b"", close
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, bytes(body), close
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _drive_connection(
    spec: LoadSpec,
    template: BodyTemplate | None,
    stats: _WorkerStats,
    ready: asyncio.Future[None],
    window: asyncio.Future[tuple[float, float]],
) -> None:
    url = urlsplit(spec.url)
    host = url.hostname or "127.0.0.1"
    port = url.port or 80
    path = url.path or "/"
    head = f"{spec.method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in spec.headers.items())
    static = (head + "\r\n").encode() if template is None else b""
    reader, writer = await asyncio.open_connection(host, port)
    if not ready.done():
        ready.set_result(None)
    start, end = await window
    clock = time.monotonic
    try:
        while True:
            if template is None:
                request = static
            else:
                body = template.next()
                request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            t0 = clock()
            if t0 >= end:
                return
            try:
                writer.write(request)
                status, payload, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                stats.socket_errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            t1 = clock()
            if t0 >= start and t1 <= end:
                stats.latencies.append(t1 - t0)
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
                if not 200 <= status <= 299 and len(stats.samples) < MAX_SAMPLES:
                    text = payload[:300].decode(errors="replace").replace("\n", " ")
                    stats.samples.append(f"{status} {text}")
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _worker_async(
    pipe: Connection, spec: LoadSpec, worker: int, connections: int
) -> _WorkerStats:
    loop = asyncio.get_running_loop()
    stats = _WorkerStats()
    template = (
        BodyTemplate(spec.body_template, spec.run_tag, worker) if spec.body_template else None
    )
    readies: list[asyncio.Future[None]] = [loop.create_future() for _ in range(connections)]
    window: asyncio.Future[tuple[float, float]] = loop.create_future()
    tasks = [
        asyncio.create_task(_drive_connection(spec, template, stats, ready, window))
        for ready in readies
    ]
    await asyncio.gather(*readies)
    pipe.send("ready")
    start, end = await loop.run_in_executor(None, pipe.recv)
    window.set_result((start, end))
    await asyncio.gather(*tasks)
    return stats


def _worker_main(pipe: Connection, spec: LoadSpec, worker: int, connections: int) -> None:
    """Entry point of one load process (spawned: imports nothing of the parent's)."""
    coro: Coroutine[Any, Any, _WorkerStats] = _worker_async(pipe, spec, worker, connections)
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            stats = runner.run(coro)
        pipe.send((stats.latencies.tobytes(), stats.statuses, stats.socket_errors, stats.samples))
    except BaseException as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        pipe.close()


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


Worker = tuple[multiprocessing.process.BaseProcess, Connection]


def _receive(worker: Worker, timeout: float, what: str) -> Any:
    proc, pipe = worker
    if not pipe.poll(timeout):
        raise RuntimeError(f"load worker {proc.name} did not {what} within {timeout:.0f} s")
    msg = pipe.recv()
    if isinstance(msg, tuple) and msg[0] == "error":
        raise RuntimeError(f"load worker {proc.name} failed: {msg[1]}")
    return msg


def _merge(reports: list[Any], options: LoadOptions, procs: int) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    socket_errors = 0
    samples: list[str] = []
    for raw, st, errs, smp in reports:
        values = array("d")
        values.frombytes(raw)
        latencies.extend(v * 1000 for v in values)
        for code, count in st.items():
            statuses[code] = statuses.get(code, 0) + count
        socket_errors += errs
        samples.extend(smp)
    latencies.sort()
    return LoadResult(
        generator=f"python ({procs} processes)",
        connections=options.connections,
        seconds=options.seconds,
        requests=len(latencies),
        rps=len(latencies) / options.seconds,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        statuses=statuses,
        socket_errors=socket_errors,
        samples=samples[:MAX_SAMPLES],
    )


def _run_python(spec: LoadSpec, options: LoadOptions) -> LoadResult:
    ctx = multiprocessing.get_context("spawn")
    procs = max(1, min(options.python_procs, options.connections))
    shares = [
        options.connections // procs + (i < options.connections % procs) for i in range(procs)
    ]
    workers: list[Worker] = []
    try:
        for i, share in enumerate(shares):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main, args=(child, spec, i, share), name=f"bench-load-{i}"
            )
            proc.start()
            child.close()
            workers.append((proc, parent))
        for worker in workers:
            _receive(worker, 60, "connect")
        # Every process connected: one shared window on the system-wide monotonic clock.
        start = time.monotonic() + 0.05 + options.warmup
        for _, pipe in workers:
            pipe.send((start, start + options.seconds))
        wait = options.warmup + options.seconds + 60
        reports = [_receive(worker, wait, "report") for worker in workers]
    finally:
        for started, pipe in workers:
            pipe.close()
            started.join(timeout=5)
            if started.is_alive():
                started.kill()
                started.join()
    return _merge(reports, options, procs)


def options_from_env(env: Mapping[str, str] | None = None) -> LoadOptions:
    env = os.environ if env is None else env
    return LoadOptions(
        connections=int(env.get("BENCH_CONNECTIONS", "8")),
        seconds=float(env.get("BENCH_SECONDS", "10")),
        warmup=float(env.get("BENCH_WARMUP_SECONDS", "2")),
        generator=env.get("BENCH_LOADGEN", "auto"),
        wrk_threads=int(env.get("BENCH_WRK_THREADS", "1")),
        python_procs=int(env.get("BENCH_LOAD_PROCS", "2")),
    )
