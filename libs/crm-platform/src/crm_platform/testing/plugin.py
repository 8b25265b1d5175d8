"""Pytest plugin (loaded by -p crm_platform.testing.plugin): session-wide real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from crm_platform.testing.harness import ServiceStarter
from crm_platform.testing.servers import nats_url as _nats_url
from crm_platform.testing.servers import postgres_url


def _repo_root() -> Path:
    here = Path.cwd()
    for candidate in (here, *here.parents):
        if (candidate / "uv.lock").exists():
            return candidate
    return here


@pytest.fixture(scope="session")
def run_namespace() -> str:
    """Unique per test run: database names and NATS subjects/streams carry it."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    data_dir = _repo_root() / "var" / "test-pg"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with postgres_url(data_dir) as url:
        yield url


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with _nats_url() as url:
        yield url


@pytest.fixture(scope="session")
async def starter(pg_url: str, nats_url: str, run_namespace: str) -> AsyncIterator[ServiceStarter]:
    s = ServiceStarter(pg_url=pg_url, nats_url=nats_url, namespace=run_namespace)
    yield s
    await s.cleanup()
