"""Per-request HTTP load from worker processes: a paced open loop and a closed loop over a
fixed list of requests.

``bench.load`` sends one templated request shape, closed loop. Scenarios whose requests
differ by path (``POST /v1/leads/{id}:convert``, ``GET /v1/customers/{id}:view360``) or
that need a fixed rate use this module instead. Same structure as ``bench.load``'s fallback:
``multiprocessing`` (spawn) worker processes, each with the small HTTP/1.1 keep-alive client
of ``bench.load`` on asyncio/uvloop, all starting on one shared ``time.monotonic`` instant
(system wide on Linux).

- ``run_paced``: open loop at a fixed rate (wrk2-style): request *i* is due at
  ``start + i / rate`` whatever the earlier answers do; a request waits for a free
  connection only when ``max_connections`` are all busy. Latency is counted from the due
  instant, so a slow server cannot slow the generator down and hide its own delay
  (coordinated omission). Requests due in the first ``warmup`` seconds are sent, not counted.
- ``run_closed``: ``connections`` clients, each sending its next request from the list when
  the previous answer arrives, until the list is used up; first send and last answer times
  are returned for a rate over the whole list.

Each answer is put in a bucket by a ``classify(status, body) -> str`` function (module level,
so worker processes can import it): e.g. the conversion state, or "partial"."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from array import array
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from bench.load import MAX_SAMPLES, _read_response, percentile

Classify = Callable[[int, bytes], str]
PRE_OPEN = 8  # connections opened before the clock starts (no handshake in the first sends)
# A connection idle longer than this is closed, not reused: uvicorn closes keep-alive
# connections idle for 5 s, and a request written into one it is closing gets no answer.
IDLE_MAX = 2.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""


@dataclass(frozen=True)
class Target:
    base_url: str
    headers: Mapping[str, str]
    classify: Classify
    timeout: float = 30.0  # per answer; a request without one counts as an error


@dataclass
class PacedResult:
    """Counted requests only (warm-up excluded). Latencies in ms."""

    sent: int
    seconds: float
    rate: float
    latencies_ms: list[float]
    statuses: dict[int, int]
    classes: dict[str, int]
    errors: int  # socket errors and timeouts
    samples: list[str]
    first_send: float  # time.monotonic of the first send (warm-up included)
    last_answer: float  # time.monotonic of the last answer
    max_lateness_ms: float  # how late the generator sent a request after its due instant
    connections_opened: int

    def pct(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    @property
    def max_ms(self) -> float:
        return self.latencies_ms[-1] if self.latencies_ms else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code <= 299)

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "latency_ms": {
                "p50": round(self.pct(50), 3),
                "p90": round(self.pct(90), 3),
                "p99": round(self.pct(99), 3),
                "max": round(self.max_ms, 3),
            },
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "classes": dict(sorted(self.classes.items())),
            "errors": self.errors,
            "error_samples": self.samples,
            "max_send_lateness_ms": round(self.max_lateness_ms, 3),
            "connections_opened": self.connections_opened,
        }


@dataclass
class _Stats:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    statuses: dict[int, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    first_send: float = 0.0
    last_answer: float = 0.0
    max_lateness: float = 0.0
    opened: int = 0


class _Pool:
    """Keep-alive connections to one host, opened on demand up to ``limit``."""

    def __init__(self, target: Target, limit: int, stats: _Stats) -> None:
        url = urlsplit(target.base_url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
        self.target = target
        self.limit = limit
        self.stats = stats
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.open = 0
        self.freed = asyncio.Condition()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection; ``self.open`` already counts it."""
        self.stats.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.open -= 1
            raise

    async def pre_open(self, n: int) -> None:
        for _ in range(min(n, self.limit)):
            self.open += 1
            self.idle.append((*await self._connect(), time.monotonic()))

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            self._reap()
            while not self.idle and self.open >= self.limit:
                await self.freed.wait()
                self._reap()
            if self.idle:
                reader, writer, _ = self.idle.pop()
                return reader, writer
            self.open += 1
        return await self._connect()

    async def release(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], reuse: bool
    ) -> None:
        if reuse:
            self.idle.append((*conn, time.monotonic()))
        else:
            conn[1].close()
            self.open -= 1
        async with self.freed:
            self.freed.notify()

    def _reap(self) -> None:
        """Close the idle connections the server may be closing (oldest first)."""
        stale = time.monotonic() - IDLE_MAX
        while self.idle and self.idle[0][2] < stale:
            self.idle.pop(0)[1].close()
            self.open -= 1

    def encode(self, req: Request) -> bytes:
        head = f"{req.method} {self.prefix}{req.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += self.headers
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(req.body)}\r\n"
        return (head + "\r\n").encode() + req.body

    async def send(self, req: Request, since: float, counted: bool) -> None:
        """One request; latency from ``since`` (the due instant, or the send)."""
        stats = self.stats
        try:
            conn = await self.acquire()
        except OSError as exc:
            if counted:
                stats.errors += 1
                if len(stats.samples) < MAX_SAMPLES:
                    stats.samples.append(f"connect: {type(exc).__name__} {exc}")
            return
        reader, writer = conn
        sent_at = time.monotonic()
        if not stats.first_send:
            stats.first_send = sent_at
        stats.max_lateness = max(stats.max_lateness, sent_at - since)
        try:
            writer.write(self.encode(req))
            status, payload, close = await asyncio.wait_for(
                _read_response(reader), self.target.timeout
            )
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            await self.release(conn, reuse=False)
            stats.last_answer = max(stats.last_answer, time.monotonic())
            if counted:
                stats.errors += 1
                if len(stats.samples) < MAX_SAMPLES:
                    stats.samples.append(f"{req.method} {req.path}: {type(exc).__name__} {exc}")
            return
        done = time.monotonic()
        await self.release(conn, reuse=not close)
        stats.last_answer = max(stats.last_answer, done)
        if not counted:
            return
        stats.latencies.append(done - since)
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        bucket = self.target.classify(status, payload)
        stats.classes[bucket] = stats.classes.get(bucket, 0) + 1
        if not 200 <= status <= 299 and len(stats.samples) < MAX_SAMPLES:
            text = payload[:300].decode(errors="replace").replace("\n", " ")
            stats.samples.append(f"{req.method} {req.path}: {status} {text}")

    async def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


# --- workers (separate processes) -------------------------------------------------------


async def _paced_async(
    pipe: Connection,
    target: Target,
    requests: Sequence[Request],
    rate: float,
    warmup: float,
    max_connections: int,
) -> _Stats:
    """Send ``requests`` (already this worker's share) at ``rate``, open loop."""
    loop = asyncio.get_running_loop()
    stats = _Stats()
    pool = _Pool(target, max_connections, stats)
    await pool.pre_open(PRE_OPEN)
    pipe.send("ready")
    start, offset = await loop.run_in_executor(None, pipe.recv)
    counted_from = start + warmup
    tasks: set[asyncio.Task[None]] = set()
    for i, req in enumerate(requests):
        due = start + offset + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(pool.send(req, due, due >= counted_from))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    await pool.close()
    return stats


async def _closed_async(
    pipe: Connection, target: Target, requests: Sequence[Request], connections: int
) -> _Stats:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    pool = _Pool(target, connections, stats)
    await pool.pre_open(connections)
    pending = list(reversed(requests))
    pipe.send("ready")
    start, _ = await loop.run_in_executor(None, pipe.recv)
    delay = start - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)

    async def client() -> None:
        while pending:
            req = pending.pop()
            await pool.send(req, time.monotonic(), True)

    await asyncio.gather(*(client() for _ in range(connections)))
    await pool.close()
    return stats


def _worker_main(pipe: Connection, kind: str, args: tuple[Any, ...]) -> None:
    """Entry point of one load process (spawned: imports nothing of the parent's)."""
    coro: Coroutine[Any, Any, _Stats] = (
        _paced_async(pipe, *args) if kind == "paced" else _closed_async(pipe, *args)
    )
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            s = runner.run(coro)
        pipe.send(
            (
                s.latencies.tobytes(),
                s.statuses,
                s.classes,
                s.errors,
                s.samples,
                s.first_send,
                s.last_answer,
                s.max_lateness,
                s.opened,
            )
        )
    except BaseException as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        pipe.close()


# --- parent side ------------------------------------------------------------------------

Worker = tuple[multiprocessing.process.BaseProcess, Connection]


def _receive(worker: Worker, timeout: float, what: str) -> Any:
    proc, pipe = worker
    if not pipe.poll(timeout):
        raise RuntimeError(f"load worker {proc.name} did not {what} within {timeout:.0f} s")
    msg = pipe.recv()
    if isinstance(msg, tuple) and msg[0] == "error":
        raise RuntimeError(f"load worker {proc.name} failed: {msg[1]}")
    return msg


def _run_workers(
    kind: str, args: list[tuple[Any, ...]], offsets: list[float], lead: float, wait: float
) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    workers: list[Worker] = []
    try:
        for i, a in enumerate(args):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, kind, a), name=f"bench-{kind}-{i}")
            proc.start()
            child.close()
            workers.append((proc, parent))
        for worker in workers:
            _receive(worker, 60, "connect")
        start = time.monotonic() + lead
        for (_, pipe), offset in zip(workers, offsets, strict=True):
            pipe.send((start, offset))
        return [_receive(worker, wait, "report") for worker in workers]
    finally:
        for started, pipe in workers:
            pipe.close()
            started.join(timeout=5)
            if started.is_alive():
                started.kill()
                started.join()


def _merge(reports: list[Any], seconds: float) -> PacedResult:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    classes: dict[str, int] = {}
    errors = 0
    samples: list[str] = []
    firsts: list[float] = []
    last = 0.0
    lateness = 0.0
    opened = 0
    for raw, st, cl, errs, smp, first, last_answer, late, op in reports:
        values = array("d")
        values.frombytes(raw)
        latencies.extend(v * 1000 for v in values)
        for code, n in st.items():
            statuses[code] = statuses.get(code, 0) + n
        for name, n in cl.items():
            classes[name] = classes.get(name, 0) + n
        errors += errs
        samples.extend(smp)
        if first:
            firsts.append(first)
        last = max(last, last_answer)
        lateness = max(lateness, late)
        opened += op
    latencies.sort()
    sent = len(latencies) + errors
    return PacedResult(
        sent=sent,
        seconds=seconds,
        rate=sent / seconds if seconds else 0.0,
        latencies_ms=latencies,
        statuses=statuses,
        classes=classes,
        errors=errors,
        samples=samples[:MAX_SAMPLES],
        first_send=min(firsts) if firsts else 0.0,
        last_answer=last,
        max_lateness_ms=lateness * 1000,
        connections_opened=opened,
    )


def run_paced(
    target: Target,
    requests: Sequence[Request],
    *,
    rate: float,
    seconds: float,
    warmup: float,
    procs: int = 1,
    max_connections: int = 512,
) -> PacedResult:
    """``rate`` requests/s for ``warmup + seconds`` from ``requests`` (cycled if short);
    ``procs`` processes interleave the sends (process k sends every procs-th request)."""
    total = max(1, round(rate * (warmup + seconds)))
    if not requests:
        raise ValueError("no requests to send")
    todo = [requests[i % len(requests)] for i in range(total)]
    procs = max(1, procs)
    per_rate = rate / procs
    args = [
        (target, todo[k::procs], per_rate, warmup, max(1, max_connections // procs))
        for k in range(procs)
    ]
    offsets = [k / rate for k in range(procs)]
    wait = warmup + seconds + target.timeout + 60
    reports = _run_workers("paced", args, offsets, 0.1, wait)
    return _merge(reports, seconds)


def run_closed(
    target: Target, requests: Sequence[Request], *, connections: int, procs: int = 2
) -> PacedResult:
    """Every request once, ``connections`` in flight over ``procs`` processes."""
    procs = max(1, min(procs, connections))
    shares = [connections // procs + (k < connections % procs) for k in range(procs)]
    args = [(target, list(requests[k::procs]), share) for k, share in enumerate(shares)]
    wait = 3600.0
    reports = _run_workers("closed", args, [0.0] * procs, 0.1, wait)
    result = _merge(reports, 0.0)
    result.seconds = max(0.0, result.last_answer - result.first_send)
    result.rate = result.sent / result.seconds if result.seconds else 0.0
    return result
