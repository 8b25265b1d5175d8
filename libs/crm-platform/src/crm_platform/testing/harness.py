"""Start services in-process against real servers, each with its own database and a
namespace shared by the test run (so reruns and shared servers never collide)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import nats
from sqlalchemy.engine import make_url

from crm_platform import migrations
from crm_platform.runtime import Runtime, ServiceDefinition

T = TypeVar("T")


class ServiceStarter:
    def __init__(self, *, pg_url: str, nats_url: str, namespace: str) -> None:
        self.pg_url = pg_url
        self.nats_url = nats_url
        self.namespace = namespace
        self.running: list[Runtime] = []

    def db_url(self, service: str, suffix: str = "") -> str:
        name = f"crm_{service.replace('-', '_')}_{self.namespace}{suffix}"
        return make_url(self.pg_url).set(database=name).render_as_string(hide_password=False)

    async def start(
        self,
        definition: ServiceDefinition,
        *,
        directory: Runtime | None = None,
        db_suffix: str = "",
        **overrides: Any,
    ) -> Runtime:
        db_url = self.db_url(definition.name, db_suffix)
        await migrations.upgrade(definition.migrations, db_url)
        values: dict[str, Any] = {
            "service_name": definition.name,
            "db_url": db_url,
            "db_pool_size": 10,
            "nats_url": self.nats_url,
            "nats_namespace": self.namespace,
            "grpc_port": 0,
            "http_port": 0,
            "log_json": False,
            "outbox_poll_seconds": 0.2,
        }
        if directory is not None:
            values["jwks_url"] = f"http://127.0.0.1:{directory.http_port}/.well-known/jwks.json"
            values["directory_grpc_target"] = f"127.0.0.1:{directory.grpc_port}"
        values.update(overrides)
        settings = definition.settings_cls(**values)
        runtime = Runtime(definition, settings)
        await runtime.start()
        self.running.append(runtime)
        return runtime

    async def cleanup(self) -> None:
        """Stop every service, then drop this run's databases and streams, so long-lived
        shared servers (a developer's, or CI's machine services) do not accumulate them."""
        await self.stop_all()
        admin = make_url(self.pg_url).set(drivername="postgresql", database="postgres")
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE strpos(datname, $1) > 0", self.namespace
            )
            for row in rows:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        finally:
            await conn.close()
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name and info.config.name.startswith(self.namespace.upper()):
                    await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    async def stop_all(self) -> None:
        while self.running:
            await self.running.pop().stop(grace=1.0)


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 20.0, interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns without AssertionError (for event-driven effects)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(interval)
