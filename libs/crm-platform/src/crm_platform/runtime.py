"""Service runtime: wires settings -> telemetry -> database -> bus -> relay, consumers ->
gRPC and HTTP servers, and shuts them down gracefully on SIGTERM. Every service's
``__main__`` is a ServiceDefinition handed to ``main``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
import uvicorn
from fastapi import APIRouter

from crm.directory.v1 import directory_service_pb2, directory_service_pb2_grpc
from crm_platform import grpc_client, migrations
from crm_platform.auth import ApiKeyResolver, Authenticator, Principal
from crm_platform.bus import EventBus
from crm_platform.config import BaseServiceSettings
from crm_platform.consumers import ConsumerRunner, ConsumerSpec
from crm_platform.db import Database
from crm_platform.errors import Unauthenticated, Unavailable
from crm_platform.events import Namespace
from crm_platform.gc_tuning import tune_gc
from crm_platform.grpc_server import GrpcBinding, build_server, set_serving
from crm_platform.http import create_app
from crm_platform.org_moves import PathMoves
from crm_platform.outbox import OutboxRelay
from crm_platform.telemetry import configure_logging, init_tracing

log = logging.getLogger(__name__)
GAUGE_INTERVAL_SECONDS = 5.0
KILL_STEP_SECONDS = 5.0


@dataclass(frozen=True)
class PeriodicJob:
    """Work a service repeats on every replica (``run`` returns anything, e.g. a count):
    at start, then every ``interval_seconds``. Jobs keep their state in the database and
    must be safe to run on several replicas at once (claim rows with SKIP LOCKED)."""

    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]
    # Set it to run the job now rather than at the next interval (new work arrived here).
    wake: asyncio.Event | None = None


async def run_periodically(job: PeriodicJob) -> None:
    """Until cancelled; a failed run is logged and the job runs again next interval."""
    while True:
        if job.wake is not None:
            job.wake.clear()
        try:
            await job.run()
        except Exception:
            log.exception("job %s failed", job.name)
        if job.wake is None:
            await asyncio.sleep(job.interval_seconds)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.wake.wait(), job.interval_seconds)


@dataclass(frozen=True)
class ServiceDefinition:
    name: str  # "leads"; also the event producer name
    title: str
    settings_cls: type[BaseServiceSettings]
    migrations: Path
    metadata: Sequence[sa.MetaData]
    grpc: Callable[[Runtime], Sequence[GrpcBinding]]
    http: Callable[[Runtime], Sequence[APIRouter]]
    consumers: Callable[[Runtime], Sequence[ConsumerSpec]] = lambda rt: ()
    # The directory resolves API keys from its own tables; everyone else asks it over gRPC.
    api_key_resolver: Callable[[Runtime], ApiKeyResolver] | None = None
    # Runs after the bus connects, before the servers start (load keys, warm caches).
    on_start: Callable[[Runtime], Awaitable[None]] | None = None
    # Runs after the servers, consumers and jobs have stopped, before the database closes.
    on_stop: Callable[[Runtime], Awaitable[None]] | None = None
    # The directory verifies tokens against its own JWKS endpoint.
    serves_jwks: bool = False
    # Background jobs, started with the servers and cancelled on stop.
    jobs: Callable[[Runtime], Sequence[PeriodicJob]] = lambda rt: ()
    # Path prefix -> request body limit, above settings.max_body_bytes (file uploads).
    body_limits: Callable[[Runtime], Mapping[str, int]] = lambda rt: {}

    @property
    def error_domain(self) -> str:
        return f"{self.name}.crm"


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The runtime owns SIGTERM/SIGINT and stops every server in order.
        yield


def directory_api_key_resolver(rt: Runtime) -> ApiKeyResolver:
    async def resolve(secret: str) -> Principal:
        stub = directory_service_pb2_grpc.DirectoryServiceStub(rt.directory_channel())
        try:
            resp = await stub.VerifyApiKey(
                directory_service_pb2.VerifyApiKeyRequest(secret=secret),
                timeout=rt.settings.grpc_client_timeout_seconds,
                metadata=(("authorization", f"ApiKey {secret}"),),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                raise Unauthenticated(
                    "unknown or revoked API key", reason="API_KEY_INVALID"
                ) from exc
            raise Unavailable("directory unavailable to verify the API key") from exc
        return Principal.from_proto(resp.principal)

    return resolve


@dataclass
class Runtime:
    definition: ServiceDefinition
    settings: BaseServiceSettings
    db: Database = field(init=False)
    bus: EventBus = field(init=False)
    auth: Authenticator = field(init=False)
    grpc_port: int = 0
    http_port: int = 0
    # Service-specific singletons made by on_start (e.g. the directory's signing keys).
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.db = Database(
            s.db_url.get_secret_value(),
            pool_size=s.db_pool_size,
            pool_timeout=s.db_pool_timeout_seconds,
            application_name=f"crm-{s.service_name}-{uuid.uuid4().hex[:8]}",
        )
        self.bus = EventBus(s.nats_url, Namespace(s.nats_namespace), name=f"crm-{s.service_name}")
        resolver_factory = self.definition.api_key_resolver or directory_api_key_resolver
        self.auth = Authenticator(
            jwks_url=s.jwks_url,
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            api_key_resolver=resolver_factory(self),
            api_key_cache_seconds=s.api_key_cache_seconds,
        )
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[ConsumerRunner] = []
        self._relay = OutboxRelay(
            self.db,
            self.bus,
            batch_size=s.outbox_batch_size,
            poll_seconds=s.outbox_poll_seconds,
            linger_seconds=s.outbox_linger_seconds,
        )
        self._grpc: grpc.aio.Server | None = None
        self._http: _Uvicorn | None = None
        self._stopped = asyncio.Event()

    def channel(self, target: str) -> grpc.aio.Channel:
        if target not in self._channels:
            self._channels[target] = grpc_client.insecure_channel(
                target, default_timeout=self.settings.grpc_client_timeout_seconds
            )
        return self._channels[target]

    def directory_channel(self) -> grpc.aio.Channel:
        return self.channel(self.settings.directory_grpc_target)

    async def readiness(self) -> dict[str, bool]:
        return {"database": await self.db.ping(), "nats": self.bus.connected}

    async def start(self) -> None:
        s = self.settings
        await self.bus.connect()
        await self.bus.ensure_streams()
        moves = PathMoves()
        await moves.follow(self.bus.js, self.bus.ns)
        self.auth.moves = moves
        if self.definition.on_start is not None:
            await self.definition.on_start(self)
        bindings = self.definition.grpc(self)
        self._grpc, health_servicer = build_server(
            bindings, self.auth, domain=self.definition.error_domain
        )
        self.grpc_port = self._grpc.add_insecure_port(f"{s.grpc_host}:{s.grpc_port}")
        await self._grpc.start()
        app = create_app(
            title=self.definition.title,
            routers=self.definition.http(self),
            authenticator=self.auth,
            readiness=self.readiness,
            max_body_bytes=s.max_body_bytes,
            version=s.service_version,
            body_limits=self.definition.body_limits(self),
        )
        config = uvicorn.Config(
            app,
            host=s.http_host,
            port=s.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._http = _Uvicorn(config)
        self._tasks.append(asyncio.create_task(self._http.serve(), name="http"))
        while not self._http.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()
            await asyncio.sleep(0.01)
        self.http_port = self._http.servers[0].sockets[0].getsockname()[1]
        if self.definition.serves_jwks:
            self.auth.jwks_url = f"http://{s.http_host}:{self.http_port}/.well-known/jwks.json"
        self._tasks.append(asyncio.create_task(self._relay.run(), name="outbox-relay"))
        for spec in self.definition.consumers(self):
            runner = ConsumerRunner(
                spec,
                db=self.db,
                bus=self.bus,
                batch_size=s.consumer_batch_size,
                max_deliver=s.consumer_max_deliver,
                ack_wait=s.consumer_ack_wait_seconds,
                service=s.service_name,
            )
            await runner.subscribe()
            self._runners.append(runner)
            self._tasks.append(asyncio.create_task(runner.run(), name=f"consumer-{spec.name}"))
        self._tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        for job in self.definition.jobs(self):
            self._tasks.append(asyncio.create_task(run_periodically(job), name=f"job-{job.name}"))
        await set_serving(health_servicer, [b.full_name for b in bindings], True)
        self._health = health_servicer
        self._binding_names = [b.full_name for b in bindings]
        log.info("%s ready: grpc :%d http :%d", s.service_name, self.grpc_port, self.http_port)

    async def _maintenance(self) -> None:
        durables = [(r.spec.name, r.spec.event_type) for r in self._runners]
        ticks = 0
        while True:
            await asyncio.sleep(GAUGE_INTERVAL_SECONDS)
            ticks += 1
            try:
                await self._relay.refresh_gauges()
                await self.bus.refresh_consumer_gauges(durables)
                if ticks % 60 == 0:
                    await self._relay.purge_published()
            except Exception:
                log.debug("maintenance tick failed", exc_info=True)

    async def stop(self, grace: float = 5.0) -> None:
        """Drain: stop taking requests, let in-flight ones finish, stop consumers (unacked
        messages are redelivered), flush the outbox once more, close connections."""
        if getattr(self, "_health", None) is not None:
            await set_serving(self._health, self._binding_names, False)
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(grace)
        for runner in self._runners:
            runner.stop()
        self._relay.stop()
        for task in self._tasks:
            # Nothing to drain: a cancelled job's transaction rolls back, its next run redoes it.
            if task.get_name() == "maintenance" or task.get_name().startswith("job-"):
                task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*self._tasks, return_exceptions=True), timeout=grace + 2
            )
        for task in self._tasks:
            task.cancel()
        if self.definition.on_stop is not None:
            with contextlib.suppress(Exception):
                await self.definition.on_stop(self)
        with contextlib.suppress(Exception):
            await self.bus.close()
        for channel in self._channels.values():
            await channel.close(grace=None)
        await self.db.dispose()
        self._stopped.set()

    async def kill(self) -> None:
        """Stop at once, as a crashed process would (fault tests): nothing drains; in-flight
        transactions roll back with their sessions, unacked messages are redelivered after
        ack_wait, unsent outbox rows wait for the next instance. Every step is bounded."""
        # First the sessions, as when the process dies: in-flight transactions end unfinished.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.db.terminate_sessions(), KILL_STEP_SECONDS)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=KILL_STEP_SECONDS)
        if self._http is not None:
            self._http.should_exit = True
        steps: list[Awaitable[Any]] = [self.bus.close()]
        if self._grpc is not None:
            steps.append(self._grpc.stop(None))
        if self.definition.on_stop is not None:
            steps.append(self.definition.on_stop(self))
        steps.extend(channel.close(grace=None) for channel in self._channels.values())
        steps.append(self.db.dispose())
        for step in steps:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(step, KILL_STEP_SECONDS)
        self._stopped.set()

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received, draining")
        await self.stop()


def main(definition: ServiceDefinition, argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"crm-{definition.name}", description=definition.title)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = definition.settings_cls()  # fields come from the environment
    configure_logging(settings)
    if args.command == "migrate":
        asyncio.run(migrations.upgrade(definition.migrations, settings.db_url.get_secret_value()))
        return
    init_tracing(settings)
    tune_gc()
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_loop_factory()) as r:
        r.run(Runtime(definition, settings).serve_forever())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
