"""Servers and service processes for one benchmark scenario.

PostgreSQL and NATS are chosen exactly like the tests (``crm_platform.testing.servers``:
``CRM_TEST_PG_URL`` / ``CRM_TEST_NATS_URL``, else a Docker engine, else pgserver and
nats-server from the wheels). Each scenario gets its own namespace, so its databases
(``crm_<service>_<namespace>``) and NATS streams never collide with tests, other runs or
other scenarios; both are removed again when the scenario ends (``BENCH_KEEP_DB=1`` keeps
the databases for a look afterwards).

Services run as separate OS processes (``python -m crm_<service>``), configured through
environment variables like a deployment, with their output in ``var/bench/log/``."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.engine import make_url

from crm_platform.testing.servers import free_port, nats_url, postgres_url

if TYPE_CHECKING:
    from crm_platform.runtime import ServiceDefinition

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Servers:
    pg_url: str  # postgresql+asyncpg://… where CREATE DATABASE is allowed
    nats_url: str

    def describe(self) -> dict[str, str]:
        return {
            "postgres": make_url(self.pg_url).render_as_string(hide_password=True),
            "nats": self.nats_url,
        }


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    # The venv's bin dir (nats-server) is not on PATH when make runs .venv/bin/python.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    data_dir = Path(os.environ.get("BENCH_PG_DIR", REPO / "var" / "test-pg"))
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with postgres_url(data_dir) as pg, nats_url() as nats:
        yield Servers(pg_url=pg, nats_url=nats)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """postgresql+asyncpg://… -> a DSN asyncpg.connect accepts."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the bench process dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def definition(service: str) -> ServiceDefinition:
    module = importlib.import_module(f"crm_{service.replace('-', '_')}.__main__")
    found: ServiceDefinition = module.DEFINITION
    return found


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Stack:
    """One scenario's namespace, databases and service processes."""

    servers: Servers
    namespace: str = field(default_factory=lambda: "b" + uuid.uuid4().hex[:10])
    bootstrap_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    log_dir: Path = REPO / "var" / "bench" / "log"
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)

    def db_url(self, service: str, suffix: str = "") -> str:
        name = f"crm_{service.replace('-', '_')}_{self.namespace}{suffix}"
        if name not in self.databases:
            self.databases.append(name)
        return make_url(self.servers.pg_url).set(database=name).render_as_string(False)

    async def migrate(self, service: str, suffix: str = "") -> str:
        """Create and migrate ``crm_<service>_<ns><suffix>``; returns its URL."""
        from crm_platform import migrations

        url = self.db_url(service, suffix)
        await migrations.upgrade(definition(service).migrations, url)
        return url

    def spawn(self, service: str, **env: str) -> ServiceProcess:
        """Start ``python -m crm_<service>`` on free ports (its database must be migrated)."""
        http_port, grpc_port = free_port(), free_port()
        values = dict(os.environ)
        values.update(
            SERVICE_NAME=service,
            DB_URL=self.db_url(service),
            NATS_URL=self.servers.nats_url,
            NATS_NAMESPACE=self.namespace,
            GRPC_PORT=str(grpc_port),
            HTTP_PORT=str(http_port),
            BOOTSTRAP_TOKEN=self.bootstrap_token,
            LOG_LEVEL="WARNING",
            OTEL_EXPORTER_OTLP_ENDPOINT="",
        )
        directory = self.processes.get("directory")
        if directory is not None:
            values["JWKS_URL"] = f"{directory.url}/.well-known/jwks.json"
            values["DIRECTORY_GRPC_TARGET"] = directory.grpc_target
        values.update(env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{self.namespace}-{service}.log"
        module = f"crm_{service.replace('-', '_')}"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env=values,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        sp = ServiceProcess(service, proc, http_port, grpc_port, log)
        self.processes[service] = sp
        return sp

    def wait_ready(self, *names: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            for name in names:
                sp = self.processes[name]
                while True:
                    if sp.proc.poll() is not None:
                        raise RuntimeError(
                            f"{name} exited with {sp.proc.returncode}:\n{sp.log_tail()}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{sp.url}/readyz").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not ready in {timeout:.0f}s:\n{sp.log_tail()}")
                    time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every service (they drain), SIGKILL what is left after STOP_TIMEOUT."""
        running = [sp for sp in self.processes.values() if sp.proc.poll() is None]
        for sp in running:
            with contextlib.suppress(ProcessLookupError):
                sp.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for sp in running:
            try:
                sp.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                sp.proc.kill()
                sp.proc.wait()

    def close(self) -> None:
        """Stop the processes, then drop the databases and NATS streams of the namespace."""
        try:
            self.stop()
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(self._drop_state())

    async def _drop_state(self) -> None:
        import asyncpg
        import nats

        with contextlib.suppress(Exception):
            nc = await nats.connect(self.servers.nats_url, connect_timeout=2)
            try:
                jsm = nc.jsm()
                for info in await jsm.streams_info():
                    name = info.config.name or ""
                    if name.startswith(self.namespace.upper() + "_"):
                        await jsm.delete_stream(name)
            finally:
                await nc.close()
        if os.environ.get("BENCH_KEEP_DB") == "1":
            return
        admin = make_url(self.servers.pg_url).set(database="postgres")
        conn: Any = await asyncpg.connect(asyncpg_dsn(admin.render_as_string(False)))
        try:
            for name in self.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@dataclass(frozen=True)
class DealerUser:
    tenant_slug: str
    tenant_id: str
    dealer_id: str
    dealer_path: str
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def create_dealer_user(directory_url: str, bootstrap_token: str) -> DealerUser:
    """Tenant (HQ -> region -> dealer) and a rep in the dealer, through the directory's
    public REST API, like an operator and an admin would; returns the rep's token."""
    slug = "bench" + uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=directory_url, timeout=10) as c:
        r = await c.post(
            "/v1/tenants",
            json={
                "slug": slug,
                "display_name": "Bench Co",
                "admin_username": "admin",
                "admin_password": "bench-admin-pw",
            },
            headers={"Authorization": f"Bootstrap {bootstrap_token}"},
        )
        r.raise_for_status()
        created = r.json()

        async def login(username: str, password: str) -> str:
            resp = await c.post(
                "/v1/auth/token", json={"tenant": slug, "username": username, "password": password}
            )
            resp.raise_for_status()
            return str(resp.json()["access_token"])

        admin = {"Authorization": f"Bearer {await login('admin', 'bench-admin-pw')}"}
        parent = created["root"]
        for code, kind in (("east", "REGION"), ("d001", "DEALER")):
            r = await c.post(
                "/v1/org-units",
                json={
                    "parent_id": parent["id"],
                    "kind": kind,
                    "code": code,
                    "display_name": code.upper(),
                },
                headers=admin,
            )
            r.raise_for_status()
            parent = r.json()
        r = await c.post(
            "/v1/users",
            json={
                "org_unit_id": parent["id"],
                "username": "d001-rep",
                "password": "bench-rep-pw-1",
                "roles": ["rep"],
            },
            headers=admin,
        )
        r.raise_for_status()
        token = await login("d001-rep", "bench-rep-pw-1")
    return DealerUser(
        tenant_slug=slug,
        tenant_id=str(created["tenant"]["id"]),
        dealer_id=str(parent["id"]),
        dealer_path=str(parent.get("path", "")),
        username="d001-rep",
        token=token,
    )
